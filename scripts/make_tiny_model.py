"""Write a tiny random CTranslate2 Whisper (real vocabulary) for quick experiments: `python scripts/make_tiny_model.py models/tiny`."""

import sys
from pathlib import Path

from finetune.tiny import make_tiny_whisper
from voice.models import ModelStore

if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "models/tiny")
    print(make_tiny_whisper(out, ModelStore().resolve("base")))
