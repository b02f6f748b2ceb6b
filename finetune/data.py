"""Training tables: manifest -> datasets table, labels, augmentation, encoder-output cache on disk."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from finetune.decode import EOT, NO_SPEECH, PROMPT, SOT
from voice.errors import VoiceError
from voice.features import STOCK_WINDOW_SECONDS, encoder_input, encoder_window
from voice.types import SAMPLE_RATE

log = logging.getLogger(__name__)

ENCODE_BATCH = 8  # utterances per CTranslate2/PyTorch encoder call while caching
SPEED_RANGE = (0.9, 1.1)  # speed perturbation of augmented copies (Kaldi's 0.9/1.0/1.1 recipe)
# where a training row came from: sets its augmentation (and, for non-speech, its target)
SOURCES = ("synthetic", "real", "nonspeech")
MAX_PROBLEMS_SHOWN = 20  # manifest problems listed in the error message


def load_rows(manifest: str | Path, source: str = "synthetic") -> list[dict]:
    """Validated manifest lines as plain dicts (absolute audio path); bad lines raise VoiceError.

    `source` ("synthetic" or "real") is kept on every row: real clips get phone-channel copies.
    """
    try:
        from voice.data import load_manifest
    except ImportError:
        from voice.data.manifest import load_manifest
    entries, problems = load_manifest(manifest)
    errors = [p for p in problems if getattr(p, "severity", "error") == "error"]
    if errors:
        shown = "\n  ".join(str(p) for p in errors[:MAX_PROBLEMS_SHOWN])
        more = f"\n  ... and {len(errors) - MAX_PROBLEMS_SHOWN} more" if len(errors) > 20 else ""
        raise VoiceError(f"{manifest}: {len(errors)} problem(s)\n  {shown}{more}")
    rows = []
    for e in entries:
        if not Path(e.audio_path).is_file():
            raise VoiceError(f"{manifest}:{e.line}: [audio_filepath] {e.audio_path} does not exist")
        duration = e.duration
        if duration is None:
            from voice.audio import probe

            duration = probe(e.audio_path).duration - (e.offset or 0.0)
        rows.append(
            {
                "audio": str(e.audio_path),
                "offset": float(e.offset or 0.0),
                "duration": float(duration),
                "text": e.text,
                "call_id": e.call_id,
                "speaker": e.speaker or "",
                "split": e.split or "",
                "line": e.line,
                "source": source,
            }
        )
    return rows


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def window_for(duration: float, window: int | str, copy: int = 0) -> int:
    """Encoder window (s) of an utterance: its own rounded length ("auto") or at least `window`.

    Augmented copies (`copy` > 0) may be slowed down, so their window allows for the stretch.
    """
    if copy:
        duration = min(float(STOCK_WINDOW_SECONDS), duration / SPEED_RANGE[0])
    return encoder_window(duration, window)  # the transcriber's rule, so training sees serving's


def read_samples(row: dict) -> np.ndarray:
    """16 kHz float32 audio of one table row (soundfile via voice.audio)."""
    from voice.audio import read_audio

    return read_audio(row["audio"], row["offset"], row["duration"])


def label_ids(tokenizer, text: str, max_tokens: int) -> list[int]:
    """Decoder target: the transcript's tokens then <|endoftext|> (the prompt is not predicted)."""
    return tokenizer.encode(text, add_special_tokens=False)[:max_tokens] + [EOT]


def build_table(rows: list[dict], tokenizer, window: int | str, max_tokens: int, copies: int = 0):
    """A `datasets.Dataset` of rows with window, label ids, and `copy` (0 = clean, k = augmented)."""
    from datasets import Dataset

    table = Dataset.from_list(rows)
    if copies:
        from datasets import concatenate_datasets

        table = concatenate_datasets(
            [table.map(lambda r, k=k: {"copy": k}) for k in range(copies + 1)]
        )
    else:
        table = table.map(lambda r: {"copy": 0})
    return table.map(
        lambda r: {
            "window": window_for(r["duration"], window, r["copy"]),
            "labels": label_ids(tokenizer, r["text"], max_tokens),
        },
        desc="labels",
    )


# --- augmentation -----------------------------------------------------------------------------


def augment(samples: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Speed (0.9-1.1), gain (-6..+6 dB), line noise (15-40 dB SNR) and a G.711 round trip."""
    from voice.audio import float_to_pcm16, mulaw_decode, mulaw_encode, pcm16_to_float, resample

    x = np.asarray(samples, dtype=np.float32)
    if rng.random() < 0.8:
        factor = rng.uniform(0.9, 1.1)  # resampling by 1/factor then playing at 16 kHz
        x = resample(x, SAMPLE_RATE, int(SAMPLE_RATE / factor))
    x = x * np.float32(10 ** (rng.uniform(-6, 6) / 20))
    if rng.random() < 0.7:
        rms = float(np.sqrt(np.mean(x**2))) + 1e-6
        noise = rng.standard_normal(x.size).astype(np.float32)
        x = x + noise * np.float32(rms / 10 ** (rng.uniform(15, 40) / 20))
    if rng.random() < 0.5:
        phone = resample(x, SAMPLE_RATE, 8000)
        phone = pcm16_to_float(mulaw_decode(mulaw_encode(float_to_pcm16(phone))))
        x = resample(phone, 8000, SAMPLE_RATE)
    return np.clip(x, -1.0, 1.0).astype(np.float32)


def phone_copy(samples: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A real clip as a call delivers it: speed-perturbed, then the simulated phone line
    (300-3400 Hz, level drift, line noise, clipping, dropouts, G.711 mu-law at 8 kHz)."""
    from voice.audio import PHONE_RATE, resample
    from voice.channel import phone_line

    x = np.asarray(samples, dtype=np.float32)
    seconds = x.size / SAMPLE_RATE
    # never stretch past Whisper's 30 s window: a long clip is only ever sped up
    low = max(SPEED_RANGE[0], seconds / (STOCK_WINDOW_SECONDS - 0.1))
    factor = rng.uniform(low, max(low, SPEED_RANGE[1]))
    if abs(factor - 1.0) > 1e-3:
        x = resample(x, SAMPLE_RATE, int(round(SAMPLE_RATE / factor)))
    return resample(phone_line(x, rng), PHONE_RATE, SAMPLE_RATE)


def row_samples(row: dict, seed: int, index: int) -> np.ndarray:
    """The row's audio; copies > 0 are augmented with a per-(seed, row, copy) generator:
    real clips through the phone line (`phone_copy`), synthetic ones by `augment`. Non-speech
    rows are generated (already through the phone line)."""
    if row.get("source") == "nonspeech":
        from finetune.nonspeech import nonspeech_samples

        return nonspeech_samples(row)
    samples = read_samples(row)
    if row.get("copy", 0):
        rng = np.random.default_rng([seed, index, row["copy"]])
        transform = phone_copy if row.get("source") == "real" else augment
        samples = transform(samples, rng)
    return samples


# --- encoder-output cache -----------------------------------------------------------------------

EncodeFn = Callable[[np.ndarray], np.ndarray]  # mel (B, n_mels, frames) -> states (B, T, d)


def ct2_encoder(model_dir: str | Path, compute_type: str, threads: int,
                device: str = "cpu") -> EncodeFn:  # fmt: skip
    """Encoder outputs from CTranslate2 (`model.encode`), as the exported model will compute them."""
    import ctranslate2

    model = ctranslate2.models.Whisper(
        str(model_dir), device=device, compute_type=compute_type, intra_threads=threads
    )

    def encode(features: np.ndarray) -> np.ndarray:
        view = ctranslate2.StorageView.from_array(np.ascontiguousarray(features, np.float32))
        return np.array(model.encode(view, to_cpu=True))

    return encode


def torch_encoder(model, last_layer: int | None = None, device: str = "cpu") -> EncodeFn:
    """Encoder outputs (or hidden states after `last_layer` layers) from the PyTorch model on
    `device` (where the model is)."""
    import torch

    from finetune.decode import run_encoder

    def encode(features: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            x = torch.from_numpy(features).to(device)
            return run_encoder(model, x, last_layer=last_layer).cpu().numpy()

    return encode


def cache_encoder_states(table, encode: EncodeFn, fingerprint: str, cache_dir: Path, seed: int,
                         n_mels: int = 80, desc: str = "encoder cache"):  # fmt: skip
    """Add `states` (fp16, window*50 x d) to every row; stored on disk, reused when unchanged."""
    from datasets import Array2D, Features

    cache_dir.mkdir(parents=True, exist_ok=True)
    probe_state = encode(encoder_input(np.zeros(SAMPLE_RATE, np.float32), 1, n_mels)[None])
    d_model = probe_state.shape[-1]

    def add_states(batch: dict, indices: list[int]) -> dict:
        rows = [{k: batch[k][i] for k in batch} for i in range(len(indices))]
        states: list[np.ndarray | None] = [None] * len(rows)
        by_window: dict[int, list[int]] = {}
        for i, row in enumerate(rows):
            by_window.setdefault(row["window"], []).append(i)
        for window, members in by_window.items():
            mels = np.stack(
                [
                    encoder_input(row_samples(rows[i], seed, indices[i]), window, n_mels)
                    for i in members
                ]
            )
            out = encode(mels)
            for j, i in enumerate(members):
                states[i] = out[j].astype(np.float16)
        return {"states": states}

    features = Features(
        {**table.features, "states": Array2D(shape=(None, d_model), dtype="float16")}
    )
    key = hashlib.sha256(f"{table._fingerprint}/{fingerprint}".encode()).hexdigest()[:16]
    return table.map(
        add_states,
        batched=True,
        batch_size=ENCODE_BATCH,
        with_indices=True,
        features=features,
        new_fingerprint=key,
        cache_file_name=str(cache_dir / f"states-{key}.arrow"),
        desc=desc,
    ).with_format("numpy", columns=["states", "labels", "window", "text", "source"])


def epoch_rows(sources: np.ndarray, real_fraction: float, seed: int, epoch: int,
               nonspeech_fraction: float = 0.0) -> np.ndarray:  # fmt: skip
    """Row indices one epoch visits: every synthetic row once, plus real and non-speech rows
    drawn so that they make up `real_fraction` and `nonspeech_fraction` of the epoch (repeating
    a set when it is smaller). Without synthetic rows, every real row once instead."""
    synthetic = np.flatnonzero(sources == "synthetic")
    real = np.flatnonzero(sources == "real")
    nonspeech = np.flatnonzero(sources == "nonspeech")
    rng = np.random.default_rng([seed, epoch, 11])

    def draw(rows: np.ndarray, want: int) -> np.ndarray:
        if not rows.size or want <= 0:
            return rows[:0]
        repeats = -(-want // rows.size)
        return np.concatenate([rng.permutation(rows) for _ in range(repeats)])[:want]

    if not synthetic.size:  # real speech alone sets the epoch's length
        fixed, real_fraction, other = real, 0.0, real[:0]
    else:
        fixed, other = synthetic, real
        if not real.size:
            real_fraction = 0.0
    if not nonspeech.size:
        nonspeech_fraction = 0.0
    total = fixed.size / max(1e-9, 1.0 - real_fraction - nonspeech_fraction)
    return np.concatenate(
        [
            fixed,
            draw(other, int(round(real_fraction * total))),
            draw(nonspeech, int(round(nonspeech_fraction * total))),
        ]
    )


def batches(windows: np.ndarray, batch_size: int, seed: int, epoch: int,
            rows: np.ndarray | None = None) -> list[list[int]]:  # fmt: skip
    """Shuffled batches of row indices (all rows, or `rows`), each batch of one window length;
    same seed, same order."""
    rng = np.random.default_rng([seed, epoch])
    rows = np.arange(len(windows)) if rows is None else np.asarray(rows)
    out = []
    for window in sorted(set(windows[rows].tolist())):
        members = rows[windows[rows] == window]
        rng.shuffle(members)
        out += [members[i : i + batch_size].tolist() for i in range(0, len(members), batch_size)]
    order = rng.permutation(len(out))
    return [out[i] for i in order]


def collate_labels(label_lists: list, prompt: list[int] | tuple[int, ...] = PROMPT,
                   no_speech: list[bool] | None = None) -> tuple:  # fmt: skip
    """(decoder input ids, targets with -100 on the prompt and padding) as torch tensors;
    `prompt` is the decoder's start sequence (`finetune.decode.decoder_prompt`).

    With `no_speech` (one flag per row), the start-of-transcript position is trained too, as
    Whisper was pre-trained: the language token after speech, <|nocaptions|> after non-speech,
    and nothing else of a non-speech row (an <|endoftext|> right after the forced prompt would
    teach the decoder to leave quiet speech empty). That position's logits are what the
    transcriber reads as the probability of no speech."""
    import torch

    longest = max(len(x) for x in label_lists)
    prompt = list(prompt)
    sot = prompt.index(SOT)
    n = len(prompt) + longest - 1
    inputs = torch.full((len(label_lists), n), EOT, dtype=torch.long)
    targets = torch.full((len(label_lists), n), -100, dtype=torch.long)
    for i, labels in enumerate(label_lists):
        labels = [int(t) for t in labels]
        seq = prompt + labels[:-1]
        inputs[i, : len(seq)] = torch.tensor(seq)
        targets[i, len(prompt) - 1 : len(prompt) - 1 + len(labels)] = torch.tensor(labels)
        if no_speech is not None and no_speech[i]:
            targets[i] = -100
            targets[i, sot] = NO_SPEECH
        elif no_speech is not None:
            targets[i, sot] = prompt[sot + 1]
    return inputs, targets


__all__ = [
    "augment",
    "batches",
    "build_table",
    "cache_encoder_states",
    "collate_labels",
    "epoch_rows",
    "phone_copy",
    "ct2_encoder",
    "file_sha256",
    "label_ids",
    "load_rows",
    "read_samples",
    "row_samples",
    "torch_encoder",
    "window_for",
]
