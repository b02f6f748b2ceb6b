"""Fine-tuning options: one frozen dataclass, checked once, echoed into the model card."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from voice.device import DEVICES
from voice.errors import ConfigError

MODES = ("decoder", "top-encoder", "full", "lora")
SELECT_ON = ("real", "synthetic")
AUTO_REAL = "auto"  # the bundled HBL read speech, imported on first use (finetune.real)
QUANTIZATIONS = ("int8", "int8_float32", "float16", "float32")


@dataclass(frozen=True)
class FinetuneOptions:
    """How to fine-tune. Defaults fit a 2-core CPU: lower encoder layers frozen and their outputs
    cached once, top 2 encoder layers + decoder trained, windows sized to each utterance."""

    base_model: str = "base"  # a ModelStore name or a CTranslate2 Whisper directory
    # decoder: encoder frozen, its outputs computed once (CTranslate2) and cached, decoder trained;
    # top-encoder: lower encoder layers cached (PyTorch), top `top_layers` + decoder trained;
    # full: everything trained on the fly; lora: LoRA adapters (peft) on attention + decoder.
    # (measured on the 500-call corpus: top-encoder + auto beat decoder + 10 s on CER and time)
    mode: str = "top-encoder"
    window: int | str = "auto"  # "auto": utterance length rounded up to 5 s; or whole seconds
    top_layers: int = 2  # encoder layers trained in top-encoder mode (fewer than the encoder has)
    lora_rank: int = 16  # LoRA rank in lora mode
    train_embeddings: bool = True  # train token embeddings (tied to the output projection)
    dropout: float = 0.1  # dropout in the trained decoder layers (the base model has none)
    lr: float = 2e-4  # peak AdamW learning rate (linear warm-up, cosine decay)
    warmup_steps: int = 30
    weight_decay: float = 0.01
    batch_size: int = 12
    max_steps: int = 2000  # upper bound; the time budget or early stopping usually ends sooner
    epochs: float = 20.0  # upper bound in passes over the training set
    # training time budget (caching and export not included); 15 fits `make finetune` in 45
    # minutes on 2 cores (BENCHMARKS.md); 22 gave ~150 steps there, 15 ~100, about equal after the
    # base mix (exp-g: 99 steps, 15.4% on the real test; stop 26's run: 153 steps, 14.9%)
    max_minutes: float = 15.0
    eval_every: int = 150  # steps between dev CER evaluations (and checkpoints)
    eval_utterances: int = 100  # dev utterances per evaluation (0: all); the card uses all
    patience: int = 4  # evaluations without dev CER improvement before stopping
    seed: int = 0
    augment: bool = True  # speed/noise/gain/codec augmentation (on-the-fly modes only)
    augment_copies: int = 0  # decoder/top-encoder modes: extra augmented copies cached per clip
    mask_time: float = 0.0  # cached modes: fraction of each clip's cached frames zeroed, in spans
    label_smoothing: float = 0.0  # cross-entropy label smoothing
    max_label_tokens: int = 120  # longer transcripts are cut
    # real speech mixed into training: a manifest with train/dev/test splits (split by speaker);
    # "auto": the bundled HBL read speech (recordings/hbl-yue, imported on first use); "": none
    real_manifest: str = AUTO_REAL
    real_fraction: float = 0.5  # share of training samples drawn from the real train split
    # phone-channel + speed-perturbed copies cached per real train clip (4 until stop 26: each
    # copy costs ~40 s of caching; ~100 steps draw each real clip only about 4 times)
    real_copies: int = 2
    # share of training samples that are generated non-speech (line noise, tones, DTMF, hum,
    # hold music...) labelled "no speech", so the model learns to say nothing on them; off by
    # default: at 0.1 two runs heard the real dev readers worse (BENCHMARKS.md, runs H, H2)
    nonspeech_fraction: float = 0.0
    # more real test sets scored for the card (comma-separated manifests); "auto": the bundled
    # HKCanCor conversation, turns aligned (recordings/hkcancor-samples); "": none
    check_manifests: str = AUTO_REAL
    # people's corrections of live transcripts (`voice data export-corrections`), comma-separated
    # manifests: their train/dev rows join the real train/dev share, their test rows are scored
    corrections: str = ""
    select_on: str = "real"  # dev CER that early-stops and picks the checkpoint: real | synthetic
    kl_weight: float = 0.0  # pull towards the base model's token distribution (KL), 0 = off
    l2_base: float = 0.0  # pull towards the base model's weights (L2-SP penalty), 0 = off
    # share of the base model's weights mixed back into the trained decoder at export (WiSE-FT
    # weight averaging): "0" exports the trained weights; "auto" tries BASE_MIX_GRID on real dev
    base_mix: str = "auto"
    # the share for the trained encoder layers: "same" as the decoder's, or a share. Measured on
    # one run (BENCHMARKS.md): the encoder's mix is what costs synthetic (espeak) speech, 28% ->
    # 42% CER, and what helps real conversation (HKCanCor 72% -> 68%); the decoder's carries
    # most of the gain on the real readers
    base_mix_encoder: str = "same"
    # text shown to the decoder as previous context in training and (from the model card) in
    # decoding, e.g. voice.asr.CANTONESE_PROMPT; off by default: measured worse on real test
    # readers (BENCHMARKS.md), though zero-shot base gains from it
    initial_prompt: str = ""
    quantization: str = "int8"  # exported CTranslate2 weights; the encoder cache uses the same
    cache_dir: str = ""  # where datasets caches features/encoder outputs ("": beside the output)
    threads: int = 0  # torch / CTranslate2 threads (0: all cores)
    # auto: a CUDA GPU when torch sees one (bfloat16 autocast where it has it, else float16 with
    # a gradient scaler), else the CPU (float32, as before); cpu; cuda (an error without one)
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ConfigError(f"--device {self.device!r}: expected one of {', '.join(DEVICES)}")
        if self.mode not in MODES:
            raise ConfigError(f"unknown mode {self.mode!r}; expected one of {', '.join(MODES)}")
        if self.window != "auto" and not (isinstance(self.window, int) and 1 <= self.window <= 30):
            raise ConfigError(f"window must be 'auto' or whole seconds 1-30, not {self.window!r}")
        if self.quantization not in QUANTIZATIONS:
            raise ConfigError(
                f"unknown quantization {self.quantization!r}; expected {', '.join(QUANTIZATIONS)}"
            )
        for name in ("batch_size", "max_steps", "eval_every", "patience"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        if self.lr <= 0 or self.max_minutes <= 0:
            raise ConfigError("lr and max_minutes must be positive")
        if self.select_on not in SELECT_ON:
            raise ConfigError(f"select_on must be one of {', '.join(SELECT_ON)}")
        if self.real_copies < 0 or self.kl_weight < 0 or self.l2_base < 0:
            raise ConfigError("real_copies, kl_weight and l2_base cannot be negative")
        if self.base_mix != "auto":
            share = parse_share(self.base_mix)
            if share > 0 and self.mode == "lora":
                raise ConfigError("base_mix: LoRA adapters are not mixed with the base; use 0")
        if self.base_mix_encoder != "same":
            share = parse_share(self.base_mix_encoder, "base_mix_encoder", "'same'")
            if share > 0 and self.mode == "lora":
                raise ConfigError("base_mix_encoder: LoRA adapters are not mixed with the base")
        for name in ("mask_time", "label_smoothing", "dropout", "real_fraction",
                     "nonspeech_fraction"):  # fmt: skip
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), not {getattr(self, name)}")
        if self.real_fraction + self.nonspeech_fraction >= 1.0:
            raise ConfigError(
                f"real_fraction + nonspeech_fraction must stay under 1 (the rest is synthetic "
                f"speech), not {self.real_fraction} + {self.nonspeech_fraction}"
            )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FinetuneOptions:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def parse_share(text: str, name: str = "base_mix", word: str = "'auto'") -> float:
    """`--base-mix` (or `--base-mix-encoder`) value other than its word: a share in [0, 1)."""
    try:
        share = float(text)
    except ValueError:
        share = -1.0
    if not 0.0 <= share < 1.0:
        raise ConfigError(f"{name} must be {word} or a share in [0, 1), not {text!r}")
    return share


def parse_window(text: str) -> int | str:
    """`--window` value: "auto" or whole seconds."""
    if text == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"--window must be 'auto' or whole seconds, not {text!r}") from None


__all__ = ["AUTO_REAL", "MODES", "SELECT_ON", "FinetuneOptions", "parse_share", "parse_window"]
