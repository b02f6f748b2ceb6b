"""Streaming Cantonese voice front-end for Hong Kong call centres."""

__version__ = "0.1.0"
