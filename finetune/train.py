"""The fine-tuning run: data, encoder cache, training loop with checkpoints, export, scoring."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from finetune.config import FinetuneOptions, parse_share
from voice.errors import VoiceError

log = logging.getLogger(__name__)

CHECKPOINT = "last.pt"  # trainable weights, optimizer, counters: written every eval
BEST = "best.pt"  # trainable weights with the best dev CER so far
MIN_LR_FRACTION = 0.1  # cosine decay ends at this fraction of the peak learning rate
DEV_FALLBACK_EVERY = 20  # without a dev split, every 20th training utterance is held out
# Selection on real dev CER: a change smaller than this (about half the standard error of CER on
# ~70 utterances) is a tie, and a tie goes to the lower synthetic dev CER. Measured: real dev
# 21.4% vs 21.5% at steps 300 and 336 of one run, synthetic dev 18.2% vs 7.9%.
SELECTION_TIE = 0.005
# Shares of the base model's weights tried at export by `base_mix="auto"` (WiSE-FT, Wortsman et al.
# 2022). Measured on the default run exp-g (99 steps on a slow 2-core machine): unseen real HBL
# readers 20.7% -> 15.4% CER and HKCanCor conversation 76.9% -> 66.3% at 0.5 (BENCHMARKS.md).
BASE_MIX_GRID = (0.0, 0.25, 0.5, 0.75)


@dataclass
class RunState:
    """Counters a checkpoint restores."""

    step: int = 0
    elapsed: float = 0.0  # training seconds spent so far (across resumes)
    best_cer: float = math.inf
    best_secondary: float = math.inf  # synthetic dev CER at the best step (breaks ties)
    best_step: int = 0
    bad_evals: int = 0
    history: list[dict] = field(default_factory=list)


class RegressionError(VoiceError):
    """The fine-tuned model hears real speech worse than the zero-shot base model."""


@dataclass(frozen=True)
class FinetuneResult:
    """What a run produced."""

    out: Path
    card: dict
    start_step: int
    steps: int
    losses: tuple[float, ...]


def corrections_card(manifest: Path) -> dict:
    """What the model card says of a corrections manifest: which corrections trained it."""
    from finetune.data import file_sha256

    rows = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines() if line]
    by_split: dict[str, list] = {}
    for row in rows:
        by_split.setdefault(row.get("split", "train"), []).append(row.get("correction_id"))
    return {"manifest": str(manifest), "manifest_sha256": file_sha256(manifest),
            "calls": len({row.get("call_id") for row in rows}),
            "utterances": {split: len(ids) for split, ids in sorted(by_split.items())},
            "correction_ids": by_split}  # fmt: skip


def _split_rows(rows: list[dict]) -> tuple[list[dict], list[dict], list[dict]]:
    train = [r for r in rows if r["split"] == "train"]
    dev = [r for r in rows if r["split"] == "dev"]
    test = [r for r in rows if r["split"] == "test"]
    unsplit = [r for r in rows if r["split"] not in ("train", "dev", "test")]
    if unsplit and not train:
        train = unsplit
    if not train:
        raise VoiceError("the manifest has no training utterances (split 'train')")
    if not dev:
        log.warning("no dev split: holding out every %dth training utterance", DEV_FALLBACK_EVERY)
        dev = train[::DEV_FALLBACK_EVERY]
        train = [r for i, r in enumerate(train) if i % DEV_FALLBACK_EVERY]
    return train, dev, test


def _dev_subset(dev: list[dict], n: int, seed: int) -> list[dict]:
    if not n or n >= len(dev):
        return dev
    picks = np.random.default_rng([seed, 7]).choice(len(dev), size=n, replace=False)
    return [dev[i] for i in sorted(picks)]


def _set_trainable(model, options: FinetuneOptions) -> None:
    """requires_grad per mode; LoRA adapters are injected into `model` in place."""
    layers = len(model.model.encoder.layers)
    for p in model.parameters():
        p.requires_grad = options.mode == "full"
    if options.mode in ("decoder", "top-encoder"):
        for p in model.model.decoder.parameters():
            p.requires_grad = True
        model.model.decoder.embed_tokens.weight.requires_grad = options.train_embeddings
    if options.mode == "top-encoder":
        for layer in model.model.encoder.layers[layers - options.top_layers :]:
            for p in layer.parameters():
                p.requires_grad = True
        for p in model.model.encoder.layer_norm.parameters():
            p.requires_grad = True
    if options.mode == "lora":
        from peft import LoraConfig, inject_adapter_in_model

        config = LoraConfig(
            r=options.lora_rank,
            lora_alpha=2 * options.lora_rank,
            target_modules=["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"],
            lora_dropout=0.0,
        )
        inject_adapter_in_model(config, model)
        for name, p in model.named_parameters():
            p.requires_grad = "lora_" in name
    model.model.encoder.embed_positions.weight.requires_grad = False  # full table kept for export
    if options.mode != "lora":
        decoder = model.model.decoder
        decoder.dropout = options.dropout
        for layer in decoder.layers:
            layer.dropout = options.dropout


def _merge_lora(model):
    """Fold LoRA adapters into the base weights (a plain Whisper model again)."""
    import torch
    from peft.tuners.lora import LoraLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name)
            base = module.get_base_layer()
            setattr(parent, child, base)
    with torch.no_grad():
        assert not any("lora_" in n for n, _ in model.named_parameters())
    return model


def _lr_factor(step: int, progress: float, warmup: int) -> float:
    warm = min(1.0, (step + 1) / max(1, warmup))
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return warm * (MIN_LR_FRACTION + (1 - MIN_LR_FRACTION) * cosine)


def mask_time(states, fraction: float, rng: np.random.Generator, spans: int = 2):
    """Zero `spans` random runs of frames per clip, together about `fraction` of the frames.

    The cached modes replay the same encoder states every epoch; masking makes the decoder lean
    on context instead of memorising them (SpecAugment's time mask, applied to cached states).
    """
    states = states.clone()
    batch, frames = states.shape[:2]
    width = max(1, int(frames * fraction / spans))
    for b in range(batch):
        for start in rng.integers(0, max(1, frames - width), size=spans):
            states[b, start : start + width] = 0.0
    return states


def _save(path: Path, payload: dict) -> None:
    import torch

    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def _trainable_state(model) -> dict:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _mix(model, start: dict, trained: dict, share: float, encoder_share: float) -> None:
    """Set the trained parameters to a share of their starting (base) value plus the rest of
    their trained value: weight-space averaging of the fine-tuned and the base model, by
    `encoder_share` for the encoder's parameters and `share` for the rest (the decoder)."""
    import torch

    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in trained.items():
            part = encoder_share if name.startswith("model.encoder.") else share
            params[name].copy_(value + part * (start[name] - value))


class Trainer:
    """One fine-tuning run from a manifest to an exported model directory."""

    def __init__(self, manifest: str | Path, out: str | Path, options: FinetuneOptions,
                 force: bool = False, resume: bool = False, progress: bool = True,
                 on_step: Callable[[int, float], None] | None = None,
                 clean: bool = False, allow_regression: bool = False):  # fmt: skip
        self.manifest, self.out, self.options = Path(manifest), Path(out), options
        self.allow_regression = allow_regression  # publish even if real speech got worse
        self.force, self.resume, self.progress, self.on_step = force, resume, progress, on_step
        self.clean = clean  # delete the work directory (cache, checkpoints) after export
        self.work = self.out.with_name(f".{self.out.name}.work")
        self.cache_dir = Path(options.cache_dir) if options.cache_dir else self.work / "cache"
        self.timings: dict[str, float] = {}
        self.device = self.precision = self.ct2_device = ""  # set by `_resolve_device`
        self.base_mix: dict = {"share": 0.0}  # set by `_mix_base`

    # --- setup ------------------------------------------------------------------------------

    def _resolve_device(self) -> None:
        """Where training (torch) and the CTranslate2 parts (decoder-mode cache, the card's
        scores) run; `--device cuda` without a GPU fails here, before any data is read."""
        from voice.device import ct2_device, torch_device, torch_precision

        self.device = torch_device(self.options.device)
        self.precision = torch_precision(self.device)
        self.ct2_device = "cpu" if self.device == "cpu" else ct2_device("auto")
        log.info("training on %s (%s); CTranslate2 on %s", self.device, self.precision,
                 self.ct2_device)  # fmt: skip

    def _autocast(self):
        """Mixed precision on a GPU (`self.precision`); nothing on the CPU."""
        import contextlib

        import torch

        if self.precision in ("", "float32"):
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=getattr(torch, self.precision))

    def _prepare(self) -> None:
        import torch

        from finetune.ct2_import import load_ct2_whisper
        from finetune.data import file_sha256, load_rows
        from finetune.decode import decoder_prompt
        from finetune.nonspeech import NONSPEECH_TRAIN_CLIPS, nonspeech_rows
        from finetune.real import resolve_check_manifests, resolve_real_manifest
        from voice.models import ModelStore

        o = self.options
        threads = o.threads or os.cpu_count() or 1
        torch.set_num_threads(threads)
        torch.manual_seed(o.seed)
        self.threads = threads
        self.rows = load_rows(self.manifest)
        self.train_rows, dev_rows, self.test_rows = _split_rows(self.rows)
        self.dev_rows = dev_rows
        self.real_manifest = resolve_real_manifest(o.real_manifest)
        self.check_manifests = resolve_check_manifests(o.check_manifests)
        self.real_train = self.real_dev = self.real_test = []
        if self.real_manifest is not None:
            real = load_rows(self.real_manifest, source="real")
            self.real_train = [r for r in real if r["split"] == "train"]
            self.real_dev = [r for r in real if r["split"] == "dev"]
            self.real_test = [r for r in real if r["split"] == "test"]
            if not self.real_train or not self.real_dev:
                raise VoiceError(
                    f"{self.real_manifest}: real speech needs train and dev splits (by speaker); "
                    "import it with `voice data import ... --split speaker`"
                )
        self.nonspeech_train = (
            nonspeech_rows(NONSPEECH_TRAIN_CLIPS, o.seed) if o.nonspeech_fraction else []
        )
        self.corrections = [Path(p.strip()) for p in o.corrections.split(",") if p.strip()]
        for manifest in self.corrections:
            rows = load_rows(manifest, source="real")  # real phone audio, heard by people
            self.real_train = self.real_train + [r for r in rows if r["split"] == "train"]
            self.real_dev = self.real_dev + [r for r in rows if r["split"] == "dev"]
        if o.select_on == "real" and not self.real_dev:
            log.warning("no real speech: selecting the checkpoint on synthetic dev CER")
        self.select_on = "real" if self.real_dev and o.select_on == "real" else "synthetic"
        # dev sets evaluated during training: the selection set first, the other reported beside
        self.dev_sets = {"synthetic": _dev_subset(dev_rows, o.eval_utterances, o.seed)}
        if self.real_dev:
            self.dev_sets["real"] = _dev_subset(self.real_dev, o.eval_utterances, o.seed)
        self.manifest_sha = file_sha256(self.manifest)
        self.base_dir = ModelStore().resolve(o.base_model)
        self.model, self.processor = load_ct2_whisper(self.base_dir)
        self.model.to(self.device or "cpu")
        # trained with the prompt it is decoded with (the card's initial_prompt)
        self.decoder_prompt = decoder_prompt(self.processor.tokenizer, o.initial_prompt)
        self.layers = len(self.model.model.encoder.layers)
        if o.mode == "top-encoder" and not 1 <= o.top_layers < self.layers:
            raise VoiceError(f"top_layers must be 1-{self.layers - 1} for this model")
        hours = sum(r["duration"] for r in self.train_rows) / 3600
        real_hours = sum(r["duration"] for r in self.real_train) / 3600
        log.info(
            "manifest %s: %d train (%.2f h), %d dev, %d test utterances; real %s: %d train "
            "(%.2f h), %d dev, %d test; mode %s, window %s, real fraction %.2f, selecting on %s",
            self.manifest, len(self.train_rows), hours, len(dev_rows), len(self.test_rows),
            self.real_manifest or "none", len(self.real_train), real_hours, len(self.real_dev),
            len(self.real_test), o.mode, o.window, o.real_fraction, self.select_on,
        )  # fmt: skip

    def _tables(self) -> None:
        from datasets import concatenate_datasets

        from finetune.data import build_table, cache_encoder_states, ct2_encoder, torch_encoder

        o, tok = self.options, self.processor.tokenizer
        cached = o.mode in ("decoder", "top-encoder")
        copies = o.augment_copies if (cached and o.augment) else 0
        # real clips: the clean recording plus phone-channel copies (cached modes), so the model
        # hears real voices the way calls deliver them; cached apart from the synthetic rows so
        # that changing either reuses the other's cache
        parts = {"train": build_table(self.train_rows, tok, o.window, o.max_label_tokens, copies)}
        if self.real_train:
            real_copies = o.real_copies if cached else 0
            parts["real train"] = build_table(
                self.real_train, tok, o.window, o.max_label_tokens, real_copies
            )
        if self.nonspeech_train:
            parts["non-speech"] = build_table(
                self.nonspeech_train, tok, o.window, o.max_label_tokens
            )
        dev = {
            f"{name} dev": build_table(rows, tok, o.window, o.max_label_tokens)
            for name, rows in self.dev_sets.items()
        }
        if not cached:
            self.train_table = concatenate_datasets(list(parts.values())).with_format(
                "numpy", columns=["labels", "window", "source"], output_all_columns=True
            )
            self.dev_tables = {name.removesuffix(" dev"): t for name, t in dev.items()}
            return
        bin_stat = (self.base_dir / "model.bin").stat()
        if o.mode == "decoder":
            from voice.device import ct2_compute_type

            compute = {"float16": "float32"}.get(o.quantization, o.quantization)
            device = self.ct2_device or "cpu"
            compute = ct2_compute_type(device, compute)  # int8 on a GPU: int8_float16
            encode = ct2_encoder(self.base_dir, compute, self.threads, device)
            key = f"ct2-{compute}"
        else:
            encode = torch_encoder(
                self.model, last_layer=self.layers - o.top_layers, device=self.device or "cpu"
            )
            key = f"torch-layers{self.layers - o.top_layers}"
        fingerprint = (
            f"{self.base_dir.resolve()}:{bin_stat.st_size}:{bin_stat.st_mtime}:{key}:{o.seed}"
        )
        start = time.perf_counter()
        done = {
            name: cache_encoder_states(
                table, encode, fingerprint, self.cache_dir, o.seed, desc=f"caching {name}"
            )
            for name, table in {**parts, **dev}.items()
        }
        self.train_table = concatenate_datasets([done[name] for name in parts]).with_format(
            "numpy", columns=["states", "labels", "window", "text", "source"]
        )
        self.dev_tables = {name.removesuffix(" dev"): done[name] for name in dev}
        self.timings["cache_seconds"] = time.perf_counter() - start
        log.info("encoder cache ready in %.0f s (%s)", self.timings["cache_seconds"], key)

    # --- model steps ------------------------------------------------------------------------

    def _encoder_input(self, table, indices: list[int], step: int, train: bool):
        """What the trained part of the encoder reads for rows `indices`: cached states (decoder
        and top-encoder modes, time-masked in training) or mel features of (augmented) audio."""
        import torch

        from finetune.data import augment, row_samples
        from voice.features import encoder_input

        o = self.options
        if o.mode in ("decoder", "top-encoder"):
            raw = table[indices]["states"]
            raw = np.stack(list(raw)) if raw.dtype == object else raw
            states = torch.from_numpy(raw.astype(np.float32))
            if train and o.mask_time > 0:
                states = mask_time(states, o.mask_time, np.random.default_rng([o.seed, step]))
            return states.to(self.device or "cpu")
        mels = []
        for k, i in enumerate(indices):
            row = table[int(i)]
            samples = row_samples(row, o.seed, int(i))  # the file's audio, or generated noise
            if train and o.augment and row["source"] != "nonspeech":
                samples = augment(samples, np.random.default_rng([o.seed, step, k]))
            mels.append(encoder_input(samples, int(row["window"])))
        return torch.from_numpy(np.stack(mels)).to(self.device or "cpu")

    def _encode(self, model, inputs):
        """Encoder outputs of `model` from `_encoder_input`'s tensor."""
        from finetune.decode import run_encoder

        if self.options.mode == "decoder":
            return inputs
        if self.options.mode == "top-encoder":
            return run_encoder(model, inputs, first_layer=self.layers - self.options.top_layers)
        return run_encoder(model, inputs)

    def _logits(self, model, inputs, states, keep):
        hidden = model.model.decoder(
            input_ids=inputs, encoder_hidden_states=states, use_cache=False
        ).last_hidden_state
        return model.proj_out(hidden[keep])

    def _loss(self, indices: list[int], step: int):
        """Cross-entropy on the labels, plus the optional pulls towards the base model."""
        import torch
        import torch.nn.functional as F

        from finetune.data import collate_labels

        o = self.options
        rows = [self.train_table[int(i)] for i in indices]
        labels = [row["labels"] for row in rows]
        # the start-of-transcript position is trained only when non-speech is in the mix: the
        # default stays the measured configuration (BENCHMARKS.md, runs G, H)
        no_speech = [row["source"] == "nonspeech" for row in rows] if self.nonspeech_train else None
        inputs, targets = collate_labels(labels, self.decoder_prompt, no_speech)
        inputs, targets = inputs.to(self.device or "cpu"), targets.to(self.device or "cpu")
        keep = targets != -100
        encoder_input = self._encoder_input(self.train_table, indices, step, train=True)
        with self._autocast():
            states = self._encode(self.model, encoder_input)
            logits = self._logits(self.model, inputs, states, keep).float()
        loss = F.cross_entropy(logits, targets[keep], label_smoothing=o.label_smoothing)
        if o.kl_weight > 0:
            # KL(base || tuned) on the same inputs: keeps what the base model predicts where
            # the labels do not say otherwise (learning without forgetting)
            with torch.no_grad(), self._autocast():
                ref_states = self._encode(self.reference, encoder_input)
                ref_logits = self._logits(self.reference, inputs, ref_states, keep).float()
            ref = F.log_softmax(ref_logits, -1)
            loss = loss + o.kl_weight * F.kl_div(
                F.log_softmax(logits, -1), ref, log_target=True, reduction="batchmean"
            )
        if o.l2_base > 0:
            # L2-SP: squared distance of the trained weights from where they started
            loss = loss + o.l2_base * sum(
                (p - self.start_weights[n]).pow(2).sum()
                for n, p in self.model.named_parameters()
                if p.requires_grad
            )
        return loss

    def dev_cer(self, name: str = "synthetic") -> float:
        """Greedy-decoded CER on a dev set (`self.dev_sets`), on the PyTorch model in eval mode."""
        import torch

        from finetune.decode import cer, greedy_decode, to_hk

        table, rows = self.dev_tables[name], self.dev_sets[name]
        self.model.eval()
        windows = np.asarray(table["window"])
        hyps = [""] * len(windows)
        with torch.no_grad(), self._autocast():
            for w in sorted(set(windows.tolist())):
                members = np.flatnonzero(windows == w).tolist()
                for i in range(0, len(members), 16):
                    group = members[i : i + 16]
                    states = self._encode(
                        self.model, self._encoder_input(table, group, 0, train=False)
                    )
                    for j, tokens in zip(
                        group,
                        greedy_decode(self.model, states, prompt=self.decoder_prompt),
                        strict=True,
                    ):
                        text = self.processor.tokenizer.decode(tokens, skip_special_tokens=True)
                        hyps[j] = to_hk(text)
        self.model.train()
        return cer([r["text"] for r in rows], hyps)

    # --- loop -------------------------------------------------------------------------------

    def _checkpoint(self, optimizer, state: RunState) -> None:
        import torch

        _save(
            self.work / CHECKPOINT,
            {
                "trainable": _trainable_state(self.model),
                "optimizer": optimizer.state_dict(),
                "state": state.__dict__,
                "options": self.options.to_dict(),
                "manifest_sha256": self.manifest_sha,
                "torch_rng": torch.get_rng_state(),
            },
        )

    def _restore(self, optimizer) -> RunState:
        import torch

        path = self.work / CHECKPOINT
        if not self.resume:
            shutil.rmtree(self.work / "checkpoints", ignore_errors=True)
            for name in (CHECKPOINT, BEST):
                (self.work / name).unlink(missing_ok=True)
            return RunState()
        if not path.is_file():
            raise VoiceError(f"--resume: no checkpoint at {path}")
        saved = torch.load(path, weights_only=False, map_location="cpu")
        if saved["manifest_sha256"] != self.manifest_sha:
            raise VoiceError(f"--resume: {self.manifest} changed since the checkpoint was written")
        if saved["options"]["mode"] != self.options.mode:
            raise VoiceError(
                f"--resume: the checkpoint was trained in mode {saved['options']['mode']}"
            )
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, value in saved["trainable"].items():
                params[name].copy_(value)
        optimizer.load_state_dict(saved["optimizer"])
        torch.set_rng_state(saved["torch_rng"])
        state = RunState(**saved["state"])
        log.info("resumed from %s at step %d (best dev CER %.3f)", path, state.step, state.best_cer)
        return state

    def train(self) -> tuple[RunState, list[float], int]:
        """Run the loop until max steps, epochs, the time budget or early stopping end it."""
        import torch
        from tqdm import tqdm

        from finetune.data import batches, epoch_rows

        o = self.options
        _set_trainable(self.model, o)
        self.model.train()
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        log.info("training %.1f M parameters", sum(p.numel() for p in trainable) / 1e6)
        if o.kl_weight > 0:
            import copy

            self.reference = copy.deepcopy(self.model).eval()
            for p in self.reference.parameters():
                p.requires_grad = False
        # the trained weights as they start (the base model's): for L2-SP and the export's mix
        self.start_weights = _trainable_state(self.model)
        optimizer = torch.optim.AdamW(trainable, lr=o.lr, weight_decay=o.weight_decay, fused=True)
        # float16 on a GPU needs loss scaling; off (a pass-through) on the CPU and with bfloat16
        scaler = torch.amp.GradScaler("cuda", enabled=self.precision == "float16")
        self.work.mkdir(parents=True, exist_ok=True)
        state = self._restore(optimizer)
        start_step = state.step
        windows = np.asarray(self.train_table["window"])
        sources = np.asarray(self.train_table["source"])

        def epoch_batches(epoch: int) -> list[list[int]]:
            rows = epoch_rows(sources, o.real_fraction, o.seed, epoch, o.nonspeech_fraction)
            return batches(windows, o.batch_size, o.seed, epoch, rows)

        per_epoch = len(epoch_batches(0))
        planned = max(1, min(o.max_steps, math.ceil(o.epochs * per_epoch)))
        budget = o.max_minutes * 60
        losses: list[float] = []
        ema = None
        bar = tqdm(total=planned, initial=state.step, desc="fine-tuning", unit="step",
                   disable=not self.progress, dynamic_ncols=True)  # fmt: skip
        epoch_cache: dict[int, list[list[int]]] = {}
        t0 = time.perf_counter() - state.elapsed
        resumed_at = state.elapsed  # training seconds spent before this session's first step
        stop_reason = "max steps"
        try:
            while state.step < planned:
                if time.perf_counter() - t0 >= budget:
                    stop_reason = "time budget"
                    break
                epoch, k = divmod(state.step, per_epoch)
                if epoch not in epoch_cache:
                    epoch_cache = {epoch: epoch_batches(epoch)}
                progress = max(state.step / planned, (time.perf_counter() - t0) / budget)
                for group in optimizer.param_groups:
                    group["lr"] = o.lr * _lr_factor(state.step, progress, o.warmup_steps)
                loss = self._loss(epoch_cache[epoch][k], state.step)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)  # clip the true gradients
                torch.nn.utils.clip_grad_norm_(trainable, 1.0)
                scaler.step(optimizer)
                scaler.update()
                state.step += 1
                value = float(loss.detach())
                losses.append(value)
                ema = value if ema is None else 0.9 * ema + 0.1 * value
                state.elapsed = time.perf_counter() - t0
                left = max(0.0, budget - state.elapsed) / 60
                bar.set_postfix(loss=f"{ema:.3f}", best_cer=f"{state.best_cer:.3f}",
                                budget_left=f"{left:.1f}m", refresh=False)  # fmt: skip
                bar.update(1)
                if self.on_step:
                    self.on_step(state.step, value)
                # a periodic evaluation that the time budget's final one would follow within a
                # quarter of an interval is skipped (measured: steps 150 and 153, 65 s each)
                per_step = (state.elapsed - resumed_at) / max(1, state.step - start_step)
                ends_soon = budget - state.elapsed < per_step * o.eval_every / 4
                if (state.step % o.eval_every == 0 and not ends_soon) or state.step == planned:
                    if self._evaluate(optimizer, state, ema):
                        stop_reason = "early stopping"
                        break
        except KeyboardInterrupt:
            state.elapsed = time.perf_counter() - t0
            self._checkpoint(optimizer, state)
            bar.close()
            log.warning("interrupted at step %d; checkpoint saved (continue with --resume)",
                        state.step)  # fmt: skip
            raise
        bar.close()
        if not state.history or state.history[-1]["step"] != state.step:
            self._evaluate(optimizer, state, ema)
        log.info("stopped after %d steps (%s), %.1f min; best dev CER %.3f at step %d",
                 state.step, stop_reason, state.elapsed / 60, state.best_cer, state.best_step)  # fmt: skip
        self.timings["train_seconds"] = state.elapsed
        self._load_best()
        self._mix_base(state)
        return state, losses, start_step

    def _mix_base(self, state: RunState) -> None:
        """Move the selected weights back towards the base model's (WiSE-FT): the decoder by
        `base_mix`, the trained encoder layers by `base_mix_encoder`. With "auto", the decoder
        share of BASE_MIX_GRID that decodes real dev best, ties going to the larger share (the
        model nearer base is the safer guess for voices no dev set holds)."""
        o = self.options
        if o.base_mix == "auto" and (o.mode == "lora" or self.select_on != "real"):
            why = "LoRA" if o.mode == "lora" else "no real dev speech to choose it on"
            log.info("base mix: none (%s)", why)
            self.base_mix = {"share": 0.0, "encoder_share": 0.0}
            return
        fixed = None  # the encoder's own share, or None: the decoder's
        if o.base_mix_encoder != "same":
            fixed = parse_share(o.base_mix_encoder, "base_mix_encoder")
        trained = _trainable_state(self.model)

        def mix(share: float) -> float:  # the decoder's share; returns the encoder's
            encoder = share if fixed is None else fixed
            _mix(self.model, self.start_weights, trained, share, encoder)
            return encoder

        if o.base_mix != "auto":
            share = parse_share(o.base_mix)
            self.base_mix = {"share": share, "encoder_share": mix(share)}
            return
        start = time.perf_counter()
        best = next((h for h in state.history if h["step"] == state.best_step), {})
        # share 0 with the encoder unmixed is the selected step itself: its figure is known
        known = "real_dev_cer" in best and not fixed
        scores = {0.0: best["real_dev_cer"]} if known else {}
        for share in BASE_MIX_GRID:
            if share not in scores:
                mix(share)
                scores[share] = round(self.dev_cer("real"), 4)
                log.info("base mix %.2f: real dev CER %.3f", share, scores[share])
        lowest = min(scores.values())
        share = max(s for s, cer in scores.items() if cer <= lowest + SELECTION_TIE)
        self.base_mix = {"share": share, "encoder_share": mix(share),
                         "real_dev_cer": {str(s): c for s, c in scores.items()}}  # fmt: skip
        self.timings["base_mix_seconds"] = time.perf_counter() - start
        log.info("base mix: %.2f of the base weights (real dev CER %.3f)", share, scores[share])

    def _evaluate(self, optimizer, state: RunState, ema: float | None) -> bool:
        """Dev CER on every dev set, best-weights bookkeeping on the selection set (real speech
        when there is some) and a checkpoint; True when patience runs out."""
        start = time.perf_counter()
        scores = {name: self.dev_cer(name) for name in self.dev_sets}
        score = scores[self.select_on]
        entry = {"step": state.step, "dev_cer": round(scores["synthetic"], 4)}
        if "real" in scores:
            entry["real_dev_cer"] = round(scores["real"], 4)
        entry["train_loss"] = None if ema is None else round(ema, 4)
        state.history.append(entry)
        if self._better(scores, state):
            state.best_cer, state.best_step = min(score, state.best_cer), state.step
            state.best_secondary, state.bad_evals = scores.get("synthetic", math.inf), 0
            _save(self.work / BEST, {"trainable": _trainable_state(self.model)})
        else:
            state.bad_evals += 1
        self._checkpoint(optimizer, state)
        shown = ", ".join(f"{name} dev CER {value:.3f}" for name, value in scores.items())
        log.info("step %d: %s (best %s %.3f), loss %.3f, eval %.0f s", state.step, shown,
                 self.select_on, state.best_cer, ema or 0.0, time.perf_counter() - start)  # fmt: skip
        return state.bad_evals >= self.options.patience

    def _better(self, scores: dict[str, float], state: RunState) -> bool:
        """Whether this evaluation beats the best so far: lower CER on the selection set, or a
        tie there (within SELECTION_TIE) with lower synthetic dev CER."""
        score = scores[self.select_on]
        if score < state.best_cer - SELECTION_TIE or not math.isfinite(state.best_cer):
            return True
        tie = self.select_on == "real" and score <= state.best_cer + SELECTION_TIE
        return tie and scores["synthetic"] < state.best_secondary

    def _load_best(self) -> None:
        import torch

        path = self.work / BEST
        if not path.is_file():
            return
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, value in torch.load(path, weights_only=False, map_location="cpu")[
                "trainable"
            ].items():
                params[name].copy_(value)

    # --- export -----------------------------------------------------------------------------

    def export(self, state: RunState) -> dict:
        """Convert, score with the production transcriber, refuse a regression, publish."""
        from finetune.export import convert, publish, staging_dir, write_card
        from finetune.real import attribution, copy_attribution

        o = self.options
        model = self.model
        if o.mode == "lora":
            model = _merge_lora(model)
        model.to("cpu").eval()  # exported from the CPU, wherever it was trained
        stage = staging_dir(self.out)
        start = time.perf_counter()
        convert(model, self.processor, self.base_dir, stage, o.quantization)
        self.timings["export_seconds"] = time.perf_counter() - start
        card = {
            "name": self.out.name,
            "base_model": str(o.base_model),
            "window_seconds": o.window,
            "initial_prompt": o.initial_prompt or None,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "manifest": str(self.manifest),
            "manifest_sha256": self.manifest_sha,
            "real_manifest": None if self.real_manifest is None else str(self.real_manifest),
            "train_hours": round(sum(r["duration"] for r in self.train_rows) / 3600, 4),
            "train_utterances": len(self.train_rows),
            "real_train_hours": round(sum(r["duration"] for r in self.real_train) / 3600, 4),
            "real_train_utterances": len(self.real_train),
            "real_fraction": o.real_fraction if self.real_train else 0.0,
            "nonspeech_fraction": o.nonspeech_fraction,
            "nonspeech_train_clips": len(self.nonspeech_train),
            "selected_on": f"{self.select_on} dev CER",
            "options": o.to_dict(),
            "quantization": o.quantization,
            # where it was trained and scored (options.device is what was asked for)
            "device": self.device,
            "precision": self.precision,
            "scored_on": self.ct2_device,
        }
        write_card(stage, card)  # the transcriber reads the window and prompt from it
        start = time.perf_counter()
        card.update(self._score(stage, state.history, state.best_step))
        self.timings["scoring_seconds"] = time.perf_counter() - start
        if self.corrections:
            card["corrections"] = [corrections_card(m) for m in self.corrections]
        if self.real_manifest is not None:
            card["data_attribution"] = {
                "real_speech": attribution(self.real_manifest),
                "files": copy_attribution(self.real_manifest, stage),
            }
        card.update(
            {
                "training_minutes": round(state.elapsed / 60, 2),
                "steps": state.step,
                "best_step": state.best_step,
                "dev_cer_history": state.history,
                "timings_seconds": {k: round(v, 1) for k, v in self.timings.items()},
            }
        )
        write_card(stage, card)
        self._refuse_regression(card, stage)
        publish(stage, self.out, self.force)
        return card

    def _score(self, stage: Path, history: list[dict], best_step: int) -> dict:
        """The card's scores: synthetic dev/test, real dev/test and the check sets, each by the
        production transcriber; on the real sets also zero-shot base, plain and prompted, with
        paired-bootstrap intervals of the difference."""
        from finetune.evaluate import (
            cer_of,
            compare,
            score_model,
            score_nonspeech,
            split_entries,
        )
        from finetune.nonspeech import NONSPEECH_TEST_CLIPS, nonspeech_rows
        from voice.asr import CANTONESE_PROMPT

        o = self.options
        compute = {"float16": "float32"}.get(o.quantization, o.quantization)

        # zero-shot base decodes the same sets every run: its transcripts are kept beside the
        # encoder cache, for the next run
        transcripts = self.cache_dir / "transcripts"

        def run(model, entries, name, prompt=None, label=""):
            cache = transcripts if model == self.base_dir else None
            result = score_model(model, entries, name, compute, self.threads, prompt,
                                 self.progress, cache, self.ct2_device or "auto")  # fmt: skip
            log.info("%s%s: CER %s on %d utterances", f"{label}, " if label else "", name,
                     cer_of(result), len(entries))  # fmt: skip
            return result

        # dev sets were scored during training (the selection's subset); the card quotes the
        # best step's figures and spends its decoding time on the test sets
        best = next((h for h in history if h["step"] == best_step), {})
        out: dict = {"dev_cer": best.get("dev_cer"), "real_dev_cer": best.get("real_dev_cer"),
                     "dev_utterances": len(self.dev_sets["synthetic"]),
                     "base_mix": self.base_mix}  # fmt: skip
        mixed = self.base_mix.get("real_dev_cer", {}).get(str(self.base_mix["share"]))
        if mixed is not None:
            out["real_dev_cer"] = mixed  # the exported (mixed) weights'; synthetic dev: before
        test_entries = split_entries(self.manifest, "test")
        test = run(stage, test_entries, "synthetic test") if test_entries else None
        out["test_cer"] = None if test is None else cer_of(test)
        out["test_utterances"] = 0 if test is None else test.utterances
        if test is not None:
            out["decode_seconds_per_utterance"] = round(
                test.processing_seconds / max(1, test.utterances), 3
            )
        real_sets = []
        if self.real_test:
            real_sets.append(("real test", self.real_manifest, "test"))
        real_sets += [("corrections test", m, "test") for m in self.corrections
                      if split_entries(m, "test")]  # fmt: skip
        real_sets += [(f"check {m.stem}", m, None) for m in self.check_manifests]
        evaluations = []
        for label, manifest, split in real_sets:
            entries = split_entries(manifest, split)
            tuned = run(stage, entries, self.out.name, label=label)
            row = {"set": label, "manifest": str(manifest), "split": split,
                   "utterances": tuned.utterances, "cer": cer_of(tuned)}  # fmt: skip
            plain = run(self.base_dir, entries, "base", label=label)
            prompted = run(self.base_dir, entries, "base+prompt", CANTONESE_PROMPT, label)
            row["base_cer"] = cer_of(plain)
            row["base_prompted_cer"] = cer_of(prompted)
            row["vs_base"] = compare(tuned, plain, o.seed)
            row["vs_base_prompted"] = compare(tuned, prompted, o.seed)
            evaluations.append(row)
        out["evaluations"] = evaluations
        # non-speech that gets past the VAD (clips not trained on): does the model keep quiet?
        clips = nonspeech_rows(NONSPEECH_TEST_CLIPS, o.seed, split="test")
        device = self.ct2_device or "auto"
        tuned = score_nonspeech(stage, clips, compute, self.threads, device)
        base = score_nonspeech(self.base_dir, clips, compute, self.threads, device, transcripts)
        out["nonspeech_test"] = {**tuned, "base_with_text": base["with_text"]}
        log.info("non-speech test: text on %d of %d clips (zero-shot base %d)",
                 tuned["with_text"], len(clips), base["with_text"])  # fmt: skip
        by_set = {row["set"]: row for row in evaluations}
        if "real test" in by_set:
            row = by_set["real test"]
            out["real_test_cer"] = row["cer"]
            out["base_real_test_cer"] = row["base_cer"]
            out["base_prompted_real_test_cer"] = row["base_prompted_cer"]
        return out

    def _refuse_regression(self, card: dict, stage: Path) -> None:
        """Do no harm: a model that hears real people worse than zero-shot base is not
        published unless `allow_regression` says so."""
        tuned, base = card.get("real_test_cer"), card.get("base_real_test_cer")
        if tuned is None or base is None or tuned <= base:
            return
        if self.allow_regression:
            log.warning("real test CER %.3f is worse than zero-shot base's %.3f; publishing "
                        "anyway (--allow-regression)", tuned, base)  # fmt: skip
            return
        raise RegressionError(
            f"refusing to export {self.out}: real test CER {tuned:.1%} is worse than zero-shot "
            f"base's {base:.1%} on the same split ({card.get('real_manifest')}). The scored "
            f"model is kept at {stage} for inspection; change the training options (more real "
            "speech, a lower --lr, fewer trained layers) or pass --allow-regression to publish it"
        )

    def run(self) -> FinetuneResult:
        from finetune.export import check_target

        self._resolve_device()
        check_target(self.out, self.force)
        t = time.perf_counter()
        self._prepare()
        self._tables()
        state, losses, start_step = self.train()
        card = self.export(state)
        log.info("finished in %.1f min: %s", (time.perf_counter() - t) / 60, self.out)
        (self.work / "last_run.json").write_text(json.dumps(card, ensure_ascii=False, indent=2))
        self._report_work_dir()
        return FinetuneResult(self.out, card, start_step, state.step, tuple(losses))

    def _report_work_dir(self) -> None:
        """Say what the work directory holds and how big it is, or delete it with `clean`."""
        if self.clean:
            shutil.rmtree(self.work, ignore_errors=True)  # an explicit --cache-dir is left alone
            log.info("removed the work directory %s (--clean)", self.work)
            return
        size = sum(f.stat().st_size for f in self.work.rglob("*") if f.is_file())
        log.info(
            "kept %s (%.1f GB: encoder cache reused by the next run, checkpoints for --resume); "
            "delete it, or pass --clean, to free the space",
            self.work, size / 1e9,
        )  # fmt: skip


def finetune(manifest: str | Path, out: str | Path, options: FinetuneOptions = FinetuneOptions(),
             force: bool = False, resume: bool = False, progress: bool = True,
             on_step: Callable[[int, float], None] | None = None,
             clean: bool = False, allow_regression: bool = False) -> FinetuneResult:  # fmt: skip
    """Fine-tune `options.base_model` on `manifest`'s train split (plus real speech) and export
    to `out`; raises RegressionError instead of publishing a model worse than base on real test."""
    return Trainer(manifest, out, options, force, resume, progress, on_step, clean,
                   allow_regression).run()  # fmt: skip


__all__ = ["FinetuneResult", "RegressionError", "Trainer", "finetune"]
