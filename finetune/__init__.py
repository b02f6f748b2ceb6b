"""Fine-tuning Whisper on call recordings, on the CPU, and exporting back to CTranslate2.

`python -m finetune --manifest recordings/synth/manifest.jsonl --out models/NAME` (or
`voice finetune ...`): reads the packaged CTranslate2 Whisper into transformers
(`finetune.ct2_import`), trains on the manifest's train split with early stopping on dev CER
(`finetune.train`, options in `finetune.config.FinetuneOptions`), and exports an int8
CTranslate2 model with a `model_card.json` (`finetune.export`). Modules import torch lazily.
"""
