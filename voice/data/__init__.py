"""Recording manifests: load, validate, check, write, import real calls, synthesise a corpus."""

from voice.data.check import CheckReport, check_manifest
from voice.data.manifest import (
    SPLITS,
    DataError,
    ManifestEntry,
    Problem,
    load_manifest,
    write_manifest,
)

__all__ = [
    "SPLITS",
    "CheckReport",
    "DataError",
    "ManifestEntry",
    "Problem",
    "check_manifest",
    "load_manifest",
    "write_manifest",
]
