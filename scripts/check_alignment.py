"""How well did `voice data import` align text to the pieces it cut? Ask a Whisper model.

    .venv/bin/python scripts/check_alignment.py recordings/generated/hbl-yue.jsonl [--model base]

Transcribes every cut piece (lines with `utt_index`) and the uncut lines of the same speakers,
then reports:
- CER of cut pieces against uncut lines of the same speakers;
- boundary cost: CER scored piece by piece minus CER of each cut line's pieces joined back
  together (same audio, same hypotheses: the difference is what misplaced boundaries cost);
- boundary shift test: would moving a text boundary by one or two clauses lower the errors of
  the two pieces around it? (hypotheses fixed, so no re-decoding).
"""

from __future__ import annotations

import argparse
from collections import defaultdict

from eval.metrics import EditCounts, cer_tokens, edit_counts
from eval.normalize import normalize
from voice.asr import Transcriber
from voice.data import load_manifest
from voice.data.align import clauses
from voice.types import Segment


def counts(reference: str, hypothesis: str) -> EditCounts:
    return edit_counts(cer_tokens(normalize(reference)), cer_tokens(normalize(hypothesis or "")))


def pooled(pairs) -> EditCounts:
    total = EditCounts()
    for reference, hypothesis in pairs:
        total = total + counts(reference, hypothesis)
    return total


def shift_errors(a: tuple[str, str], b: tuple[str, str]) -> dict[int, int]:
    """Errors of pieces a and b when k clauses move across their boundary (k<0: from a to b)."""
    ca, cb = clauses(a[0]), clauses(b[0])
    out = {}
    for k in range(-2, 3):
        if (k < 0 and -k >= len(ca)) or (k > 0 and k >= len(cb)):
            continue
        if k <= 0:
            ref_a, ref_b = "".join(ca[: len(ca) + k]), "".join(ca[len(ca) + k :]) + b[0]
        else:
            ref_a, ref_b = a[0] + "".join(cb[:k]), "".join(cb[k:])
        out[k] = counts(ref_a, a[1]).errors + counts(ref_b, b[1]).errors
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("manifest")
    parser.add_argument("--model", default="base")
    args = parser.parse_args()
    entries, _ = load_manifest(args.manifest)
    cut = [e for e in entries if "utt_index" in e.extra]
    speakers = {e.speaker for e in cut}
    uncut = [e for e in entries if "utt_index" not in e.extra and e.speaker in speakers]
    print(f"{len(cut)} cut pieces, {len(uncut)} uncut lines of the same speakers")
    transcriber = Transcriber.load(args.model)
    todo = cut + uncut
    hyp = {}
    for i in range(0, len(todo), 4):
        batch = todo[i : i + 4]
        segments = [
            Segment(e.call_id, e.offset or 0.0, e.end or 0.0, e.load_audio()) for e in batch
        ]
        for entry, result in zip(batch, transcriber.transcribe_batch(segments), strict=True):
            hyp[entry.line] = result.text
    c = pooled((e.text, hyp[e.line]) for e in cut)
    u = pooled((e.text, hyp[e.line]) for e in uncut)
    print(
        f"CER cut pieces {c.rate:.3f} ({c.reference_length} chars, D{c.deletions} I{c.insertions})"
    )
    if uncut:
        print(
            f"CER uncut lines {u.rate:.3f} ({u.reference_length} chars, D{u.deletions} I{u.insertions})"
        )
    lines = defaultdict(list)
    for entry in cut:
        lines[(entry.audio_filepath, entry.call_id)].append(entry)
    joined, better, total = EditCounts(), [], 0
    for key, pieces in lines.items():
        pieces.sort(key=lambda e: e.extra["utt_index"])
        joined = joined + counts(
            "".join(e.text for e in pieces), "".join(hyp[e.line] for e in pieces)
        )
        for a, b in zip(pieces, pieces[1:], strict=False):
            if a.extra["utt_index"] + 1 != b.extra["utt_index"]:
                continue
            errors = shift_errors((a.text, hyp[a.line]), (b.text, hyp[b.line]))
            total += 1
            if min(errors.values()) < errors[0]:
                better.append((key[1], a.extra["utt_index"], errors))
    print(f"boundary cost: {c.errors - joined.errors} edits of {c.reference_length} chars "
          f"(per piece {c.rate:.3f}, joined {joined.rate:.3f})")  # fmt: skip
    print(f"boundary shift test: {total - len(better)} of {total} boundaries best or tied")
    for call_id, index, errors in better:
        print(f"  {call_id} after piece {index}: errors by clauses moved {errors}")


if __name__ == "__main__":
    main()
