"""Real speech for the training mix: the bundled HBL read speech, imported on first use, and
the attribution that must travel with any model built from it."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from finetune.config import AUTO_REAL
from voice.errors import VoiceError

log = logging.getLogger(__name__)

PROJECT = Path(__file__).resolve().parents[1]
HBL_SOURCE = PROJECT / "recordings" / "hbl-yue" / "manifest.jsonl"  # as shipped (CC BY)
HBL_MANIFEST = PROJECT / "recordings" / "generated" / "hbl-yue.jsonl"  # cut + split by speaker
# pages over 29.5 s are cut at pauses (the importer's default). Cutting every page to <= 15 s, as
# long as the VAD's segments, was measured worse on real test readers (23.0% vs 18.8% CER):
# more aligned boundaries, each a chance of a misplaced word
HBL_MAX_SECONDS = 29.5
HKCANCOR_SOURCE = PROJECT / "recordings" / "hkcancor-samples" / "manifest.jsonl"
HKCANCOR_MANIFEST = PROJECT / "recordings" / "generated" / "hkcancor.jsonl"  # turns aligned


def import_bundled(source: Path, out: Path, **options) -> Path:
    """Run `voice data import` on a bundled real-speech manifest unless its output exists."""
    if out.is_file():
        return out
    from voice.data.importer import ImportOptions, import_recordings

    if not source.is_file():
        raise VoiceError(f"{source} is missing: the bundled real speech ships with the repository")
    log.info("importing %s -> %s", source, out)
    written, _, problems = import_recordings(source, out, ImportOptions(**options))
    for problem in problems:
        log.warning("%s", problem)
    if written is None:
        raise VoiceError(f"nothing could be imported from {source}")
    return written


def resolve_real_manifest(value: str) -> Path | None:
    """The real-speech manifest to mix in: None for "", the bundled HBL set for "auto"."""
    if not value:
        return None
    if value == AUTO_REAL:
        return import_bundled(
            HBL_SOURCE, HBL_MANIFEST, split="speaker", max_seconds=HBL_MAX_SECONDS
        )
    path = Path(value)
    if not path.is_file():
        raise VoiceError(f"--real-manifest {value}: no such file (pass '' to train without it)")
    return path


def resolve_check_manifests(value: str) -> list[Path]:
    """Extra real test sets scored for the card: comma-separated paths; "auto": HKCanCor."""
    if not value:
        return []
    if value == AUTO_REAL:
        return [import_bundled(HKCANCOR_SOURCE, HKCANCOR_MANIFEST, split="test", cut_turns=True)]
    paths = [Path(v.strip()) for v in value.split(",") if v.strip()]
    for path in paths:
        if not path.is_file():
            raise VoiceError(f"--check-manifests: {path} does not exist")
    return paths


def attribution(manifest: Path) -> dict | None:
    """The attribution sidecar of an imported manifest (sources, licences, files), if any."""
    from voice.data.importer import attribution_path

    sidecar = attribution_path(manifest)
    if not sidecar.is_file():
        return None
    try:
        return json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise VoiceError(f"{sidecar}: unreadable attribution ({exc})") from exc


def copy_attribution(manifest: Path, model_dir: Path) -> list[str]:
    """Copy the attribution files of `manifest`'s data into `model_dir/data-attribution/`;
    returns their paths relative to the model directory (for the card)."""
    info = attribution(manifest)
    if not info:
        return []
    target = model_dir / "data-attribution"
    copied = []
    for name in info.get("files", []):
        src = (manifest.parent / name).resolve()
        if not src.is_file():
            raise VoiceError(f"{manifest}: attribution file {src} is missing")
        target.mkdir(parents=True, exist_ok=True)
        dest = target / src.name
        shutil.copy2(src, dest)
        copied.append(str(dest.relative_to(model_dir)))
    return copied


__all__ = [
    "HBL_MANIFEST",
    "HKCANCOR_MANIFEST",
    "attribution",
    "copy_attribution",
    "import_bundled",
    "resolve_check_manifests",
    "resolve_real_manifest",
]
