"""`voice eval --ray`: the manifests' lines (utterance mode) or calls (call mode) decoded on the
Ray Data actor pool `voice batch transcribe --ray` uses (`voice.batch.ray_map`), then scored by
the same code as a local run (`score_utterances`, `eval_calls`), so the figures are a local run's.

Each actor holds one model (`voice.batch.FileTranscriber`'s loading, thread limits included) and
runs `decode_entry` or `stream_call` as a local run does; the driver loads no model.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

from eval.results import ModelResult
from eval.runner import (
    CallOutput,
    Decoded,
    EvalOptions,
    check_manifests,
    decode_entry,
    eval_calls,
    group_calls,
    score_utterances,
    stream_call,
)
from voice.batch import BatchOptions, FileTranscriber, ModelSpec, ray_map

_DECODED = tuple(f.name for f in fields(Decoded))


class _Actor(FileTranscriber):
    """A model-holding Ray actor: column `item` (JSON) in, column `result` (JSON) out, each
    result with its item's `key` and what the model actually ran as."""

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        used = self.transcriber.options
        loaded = {"device": used.device, "compute_type": used.compute_type or "",
                  "prompt": self.transcriber.prompt_text}  # fmt: skip
        out = []
        for raw in batch["item"]:
            item = json.loads(str(raw))
            result = {"key": item["key"], **loaded, **self.run(item)}
            out.append(json.dumps(result, ensure_ascii=False))
        return {"result": out}

    def run(self, item: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError


class UtteranceActor(_Actor):
    """Utterance mode: one manifest line's span through `decode_entry`."""

    def run(self, item: dict[str, Any]) -> dict[str, Any]:
        from voice.data.manifest import ManifestEntry

        entry = ManifestEntry(
            Path(item["audio_path"]), item["audio_path"], "", item["offset"], item["duration"],
            item["call_id"], line=item["line"],
        )  # fmt: skip
        return asdict(decode_entry(self.transcriber, entry))


class CallActor(_Actor):
    """Call mode: one whole file through `stream_call` (VAD + ASR)."""

    def run(self, item: dict[str, Any]) -> dict[str, Any]:
        from voice.audio import AudioError

        try:
            return asdict(
                stream_call(item["audio_path"], self.transcriber, self.vad, item["call_id"])
            )
        except AudioError as exc:
            return {"error": str(exc)}


def _items(mode: str, manifests: Sequence[tuple[str, Sequence]]) -> list[dict[str, Any]]:
    """What the actors get: each line (utterance mode) or call (call mode) of every manifest,
    keyed [manifest index, line or call index]."""
    items = []
    for m, (_, entries) in enumerate(manifests):
        if mode == "call":
            for c, group in enumerate(group_calls(entries)):
                audio, call_id = str(group[0].audio_path), group[0].call_id
                items.append({"key": [m, c], "audio_path": audio, "call_id": call_id})
        else:
            for i, e in enumerate(entries):
                items.append({"key": [m, i], "audio_path": str(e.audio_path), "offset": e.offset,
                              "duration": e.duration, "call_id": e.call_id, "line": e.line})  # fmt: skip
    return items


def _call_output(result: dict[str, Any]) -> CallOutput:
    return CallOutput(
        tuple(tuple(t) for t in result["transcripts"]), tuple(tuple(s) for s in result["segments"]),
        result["duration"], result["wall_seconds"],
    )  # fmt: skip


def evaluate_on_ray(
    models: Sequence[str],
    spec_of: Callable[[str], ModelSpec],
    manifests: Sequence[tuple[str, Sequence]],
    options: EvalOptions,
    pool: BatchOptions,
) -> Iterator[ModelResult]:
    """`eval.runner.evaluate_manifests` with the decoding on Ray (`pool.ray`: "auto" or an
    address; `pool.workers`, `pool.threads`, `pool.batch_size` as `voice batch`): one actor pool
    per model over every manifest's lines, then each manifest scored as a local run scores it."""
    from tqdm import tqdm

    from voice.audio import AudioError

    pool = pool.validate()
    check_manifests(manifests, options)
    items = _items(options.mode, manifests)
    rows = [{"item": json.dumps(item, ensure_ascii=False)} for item in items]
    unit = "call" if options.mode == "call" else "utt"
    for model in models:
        spec = spec_of(model)
        spec = replace(spec, options=replace(spec.options, cpu_threads=pool.threads))
        worker = CallActor if options.mode == "call" else UtteranceActor
        results: dict[tuple[int, int], dict[str, Any]] = {}
        # as `voice batch`'s: on stderr, counting what the pool has finished
        with tqdm(total=len(rows), desc=f"{model} (ray)", unit=unit, file=sys.stderr,
                  disable=not options.progress, leave=False) as bar:  # fmt: skip
            for row in ray_map(rows, worker, spec, pool.ray or "auto", pool.workers,
                               pool.batch_size):  # fmt: skip
                result = json.loads(row["result"])
                results[tuple(result.pop("key"))] = result
                bar.update(1)
        used = next(iter(results.values()), {})
        loaded = {"initial_prompt": used.get("prompt"), "device": used.get("device", ""),
                  "compute_type": used.get("compute_type", "")}  # fmt: skip
        for m, (manifest, entries) in enumerate(manifests):
            if options.mode == "call":
                calls = {(str(g[0].audio_path), g[0].call_id): results[(m, c)]
                         for c, g in enumerate(group_calls(entries))}  # fmt: skip

                def replay(path, _transcriber, _vad, call_id, calls=calls) -> CallOutput:
                    result = calls[(str(path), call_id)]
                    if "error" in result:
                        raise AudioError(result["error"])
                    return _call_output(result)

                quiet = replace(options, progress=False)  # the pool's bar counted the calls
                result = eval_calls(model, None, entries, quiet, spec.vad, stream=replay)
            else:
                decoded = [
                    Decoded(**{k: results[(m, i)][k] for k in _DECODED})
                    for i in range(len(entries))
                ]
                result = score_utterances(model, entries, decoded, options)
            yield replace(result, manifest=manifest, **loaded)


__all__ = ["CallActor", "UtteranceActor", "evaluate_on_ray"]
