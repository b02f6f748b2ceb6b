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

from finetune.config import FinetuneOptions
from voice.errors import VoiceError

log = logging.getLogger("voice")

CHECKPOINT = "last.pt"  # trainable weights, optimizer, counters: written every eval
BEST = "best.pt"  # trainable weights with the best dev CER so far
MIN_LR_FRACTION = 0.1  # cosine decay ends at this fraction of the peak learning rate
DEV_FALLBACK_EVERY = 20  # without a dev split, every 20th training utterance is held out


@dataclass
class RunState:
    """Counters a checkpoint restores."""

    step: int = 0
    elapsed: float = 0.0  # training seconds spent so far (across resumes)
    best_cer: float = math.inf
    best_step: int = 0
    bad_evals: int = 0
    history: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class FinetuneResult:
    """What a run produced."""

    out: Path
    card: dict
    start_step: int
    steps: int
    losses: tuple[float, ...]


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


class Trainer:
    """One fine-tuning run from a manifest to an exported model directory."""

    def __init__(self, manifest: str | Path, out: str | Path, options: FinetuneOptions,
                 force: bool = False, resume: bool = False, progress: bool = True,
                 on_step: Callable[[int, float], None] | None = None,
                 clean: bool = False):  # fmt: skip
        self.manifest, self.out, self.options = Path(manifest), Path(out), options
        self.force, self.resume, self.progress, self.on_step = force, resume, progress, on_step
        self.clean = clean  # delete the work directory (cache, checkpoints) after export
        self.work = self.out.with_name(f".{self.out.name}.work")
        self.cache_dir = Path(options.cache_dir) if options.cache_dir else self.work / "cache"
        self.timings: dict[str, float] = {}

    # --- setup ------------------------------------------------------------------------------

    def _prepare(self) -> None:
        import torch

        from finetune.ct2_import import load_ct2_whisper
        from finetune.data import file_sha256, load_rows
        from voice.models import ModelStore

        o = self.options
        threads = o.threads or os.cpu_count() or 1
        torch.set_num_threads(threads)
        torch.manual_seed(o.seed)
        self.threads = threads
        self.rows = load_rows(self.manifest)
        self.train_rows, dev_rows, self.test_rows = _split_rows(self.rows)
        self.dev_rows = dev_rows
        self.dev_eval_rows = _dev_subset(dev_rows, o.eval_utterances, o.seed)
        self.manifest_sha = file_sha256(self.manifest)
        self.base_dir = ModelStore().resolve(o.base_model)
        self.model, self.processor = load_ct2_whisper(self.base_dir)
        self.layers = len(self.model.model.encoder.layers)
        if o.mode == "top-encoder" and not 1 <= o.top_layers < self.layers:
            raise VoiceError(f"top_layers must be 1-{self.layers - 1} for this model")
        hours = sum(r["duration"] for r in self.train_rows) / 3600
        log.info(
            "manifest %s: %d train (%.2f h), %d dev, %d test utterances; mode %s, window %s",
            self.manifest, len(self.train_rows), hours, len(dev_rows), len(self.test_rows),
            o.mode, o.window,
        )  # fmt: skip

    def _tables(self) -> None:
        from finetune.data import build_table, cache_encoder_states, ct2_encoder, torch_encoder

        o, tok = self.options, self.processor.tokenizer
        cached = o.mode in ("decoder", "top-encoder")
        copies = o.augment_copies if (cached and o.augment) else 0
        self.train_table = build_table(self.train_rows, tok, o.window, o.max_label_tokens, copies)
        self.dev_table = build_table(self.dev_eval_rows, tok, o.window, o.max_label_tokens)
        if not cached:
            self.train_table = self.train_table.with_format(
                "numpy", columns=["labels", "window"], output_all_columns=True
            )
            return
        bin_stat = (self.base_dir / "model.bin").stat()
        if o.mode == "decoder":
            compute = {"float16": "float32"}.get(o.quantization, o.quantization)
            encode = ct2_encoder(self.base_dir, compute, self.threads)
            key = f"ct2-{compute}"
        else:
            encode = torch_encoder(self.model, last_layer=self.layers - o.top_layers)
            key = f"torch-layers{self.layers - o.top_layers}"
        fingerprint = (
            f"{self.base_dir.resolve()}:{bin_stat.st_size}:{bin_stat.st_mtime}:{key}:{o.seed}"
        )
        start = time.perf_counter()
        self.train_table = cache_encoder_states(
            self.train_table, encode, fingerprint, self.cache_dir, o.seed, desc="caching train"
        )
        self.dev_table = cache_encoder_states(
            self.dev_table, encode, fingerprint, self.cache_dir, o.seed, desc="caching dev"
        )
        self.timings["cache_seconds"] = time.perf_counter() - start
        log.info("encoder cache ready in %.0f s (%s)", self.timings["cache_seconds"], key)

    # --- model steps ------------------------------------------------------------------------

    def _encoder_states(self, table, indices: list[int], step: int, train: bool):
        import torch

        from finetune.data import augment, read_samples
        from finetune.decode import run_encoder
        from voice.features import encoder_input

        o = self.options
        if o.mode in ("decoder", "top-encoder"):
            raw = table[indices]["states"]
            raw = np.stack(list(raw)) if raw.dtype == object else raw
            states = torch.from_numpy(raw.astype(np.float32))
            if train and o.mask_time > 0:
                states = mask_time(states, o.mask_time, np.random.default_rng([o.seed, step]))
            if o.mode == "top-encoder":
                states = run_encoder(self.model, states, first_layer=self.layers - o.top_layers)
            return states
        mels = []
        for k, i in enumerate(indices):
            row = table[int(i)]
            samples = read_samples(row)
            if train and o.augment:
                samples = augment(samples, np.random.default_rng([o.seed, step, k]))
            mels.append(encoder_input(samples, int(row["window"])))
        return run_encoder(self.model, torch.from_numpy(np.stack(mels)))

    def _loss(self, indices: list[int], step: int):
        import torch.nn.functional as F

        from finetune.data import collate_labels

        labels = [self.train_table[int(i)]["labels"] for i in indices]
        inputs, targets = collate_labels(labels)
        states = self._encoder_states(self.train_table, indices, step, train=True)
        hidden = self.model.model.decoder(
            input_ids=inputs, encoder_hidden_states=states, use_cache=False
        ).last_hidden_state
        keep = targets != -100
        logits = self.model.proj_out(hidden[keep])
        return F.cross_entropy(logits, targets[keep], label_smoothing=self.options.label_smoothing)

    def dev_cer(self) -> float:
        """Greedy-decoded CER on the dev subset, on the PyTorch model (in eval mode)."""
        import torch

        from finetune.decode import cer, greedy_decode, to_hk

        self.model.eval()
        windows = np.asarray(self.dev_table["window"])
        hyps = [""] * len(windows)
        with torch.no_grad():
            for w in sorted(set(windows.tolist())):
                members = np.flatnonzero(windows == w).tolist()
                for i in range(0, len(members), 16):
                    group = members[i : i + 16]
                    states = self._encoder_states(self.dev_table, group, 0, train=False)
                    for j, tokens in zip(group, greedy_decode(self.model, states), strict=True):
                        text = self.processor.tokenizer.decode(tokens, skip_special_tokens=True)
                        hyps[j] = to_hk(text)
        self.model.train()
        return cer([r["text"] for r in self.dev_eval_rows], hyps)

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
        saved = torch.load(path, weights_only=False)
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

        from finetune.data import batches

        o = self.options
        _set_trainable(self.model, o)
        self.model.train()
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        log.info("training %.1f M parameters", sum(p.numel() for p in trainable) / 1e6)
        optimizer = torch.optim.AdamW(trainable, lr=o.lr, weight_decay=o.weight_decay, fused=True)
        self.work.mkdir(parents=True, exist_ok=True)
        state = self._restore(optimizer)
        start_step = state.step
        windows = np.asarray(self.train_table["window"])
        per_epoch = len(batches(windows, o.batch_size, o.seed, 0))
        planned = max(1, min(o.max_steps, math.ceil(o.epochs * per_epoch)))
        budget = o.max_minutes * 60
        losses: list[float] = []
        ema = None
        bar = tqdm(total=planned, initial=state.step, desc="fine-tuning", unit="step",
                   disable=not self.progress, dynamic_ncols=True)  # fmt: skip
        epoch_cache: dict[int, list[list[int]]] = {}
        t0 = time.perf_counter() - state.elapsed
        stop_reason = "max steps"
        try:
            while state.step < planned:
                if time.perf_counter() - t0 >= budget:
                    stop_reason = "time budget"
                    break
                epoch, k = divmod(state.step, per_epoch)
                if epoch not in epoch_cache:
                    epoch_cache = {epoch: batches(windows, o.batch_size, o.seed, epoch)}
                progress = max(state.step / planned, (time.perf_counter() - t0) / budget)
                for group in optimizer.param_groups:
                    group["lr"] = o.lr * _lr_factor(state.step, progress, o.warmup_steps)
                loss = self._loss(epoch_cache[epoch][k], state.step)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(trainable, 1.0)
                optimizer.step()
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
                if state.step % o.eval_every == 0 or state.step == planned:
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
        return state, losses, start_step

    def _evaluate(self, optimizer, state: RunState, ema: float | None) -> bool:
        """Dev CER, best-weights bookkeeping and a checkpoint; True when patience runs out."""
        start = time.perf_counter()
        score = self.dev_cer()
        state.history.append({"step": state.step, "dev_cer": round(score, 4),
                              "train_loss": None if ema is None else round(ema, 4)})  # fmt: skip
        if score < state.best_cer:
            state.best_cer, state.best_step, state.bad_evals = score, state.step, 0
            _save(self.work / BEST, {"trainable": _trainable_state(self.model)})
        else:
            state.bad_evals += 1
        self._checkpoint(optimizer, state)
        log.info("step %d: dev CER %.3f (best %.3f), loss %.3f, eval %.0f s", state.step, score,
                 state.best_cer, ema or 0.0, time.perf_counter() - start)  # fmt: skip
        return state.bad_evals >= self.options.patience

    def _load_best(self) -> None:
        import torch

        path = self.work / BEST
        if not path.is_file():
            return
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, value in torch.load(path, weights_only=False)["trainable"].items():
                params[name].copy_(value)

    # --- export -----------------------------------------------------------------------------

    def export(self, state: RunState) -> dict:
        """Convert, score dev and test with the exported model, write the card, publish."""
        from finetune.evaluate import score_ct2
        from finetune.export import convert, publish, staging_dir, write_card

        o = self.options
        model = self.model
        if o.mode == "lora":
            model = _merge_lora(model)
        model.eval()
        stage = staging_dir(self.out)
        start = time.perf_counter()
        convert(model, self.processor, self.base_dir, stage, o.quantization)
        self.timings["export_seconds"] = time.perf_counter() - start
        compute = {"float16": "float32"}.get(o.quantization, o.quantization)
        # the card scores the whole dev split; training's evaluations used `dev_eval_rows`
        dev = score_ct2(stage, self.dev_rows, o.window, compute, self.threads, self.progress)
        test = (
            score_ct2(stage, self.test_rows, o.window, compute, self.threads, self.progress)
            if self.test_rows
            else None
        )
        log.info("exported model: dev CER %.3f (%d utt, %.0f s)%s", dev.cer, dev.utterances,
                 dev.seconds, "" if test is None else
                 f", test CER {test.cer:.3f} ({test.utterances} utt, {test.seconds:.0f} s)")  # fmt: skip
        card = {
            "name": self.out.name,
            "base_model": str(o.base_model),
            "window_seconds": o.window,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "manifest": str(self.manifest),
            "manifest_sha256": self.manifest_sha,
            "train_hours": round(sum(r["duration"] for r in self.train_rows) / 3600, 4),
            "train_utterances": len(self.train_rows),
            "options": o.to_dict(),
            "dev_cer": round(dev.cer, 4),
            "test_cer": None if test is None else round(test.cer, 4),
            "quantization": o.quantization,
            "training_minutes": round(state.elapsed / 60, 2),
            "steps": state.step,
            "best_step": state.best_step,
            "dev_cer_history": state.history,
            "timings_seconds": {k: round(v, 1) for k, v in self.timings.items()},
            "dev_utterances": dev.utterances,
            "test_utterances": 0 if test is None else test.utterances,
            "decode_seconds_per_utterance": round(dev.seconds / max(1, dev.utterances), 3),
        }
        write_card(stage, card)
        publish(stage, self.out, self.force)
        return card

    def run(self) -> FinetuneResult:
        from finetune.export import check_target

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
             clean: bool = False) -> FinetuneResult:  # fmt: skip
    """Fine-tune `options.base_model` on `manifest`'s train split and export to `out`."""
    return Trainer(manifest, out, options, force, resume, progress, on_step, clean).run()


__all__ = ["FinetuneResult", "Trainer", "finetune"]
