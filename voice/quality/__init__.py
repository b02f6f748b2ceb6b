"""The quality loop: audit sampling, reviews, corrections."""
