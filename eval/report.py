"""The `--report DIR` outputs: per-utterance JSONL per model, report.md and a self-contained
report.html with plots, a worst-utterances table and, for several models, a side-by-side table
with paired-bootstrap confidence intervals on the CER difference. With several manifests, one
such report per manifest in its own subfolder and an index.md over them. Every file is written
atomically (temporary file, then rename)."""

from __future__ import annotations

import base64
import html
import json
import re
from datetime import UTC, datetime
from pathlib import Path

from eval import plots
from eval.metrics import METRICS
from eval.results import (
    BOOTSTRAP_RESAMPLES,
    CONFIDENCE,
    Comparison,
    ModelResult,
    compare_pair,
    model_summary,
    summary_json,
)
from voice.files import write_atomic

WORST_SHOWN = 20  # rows in the worst-utterances table
PLOT_NAMES = ("cer_by_speaker", "cer_by_call", "error_types", "latency")
INDEX_NAME = "index.md"  # the list of per-manifest reports, when there are several


def model_slugs(results: list[ModelResult]) -> list[str]:
    """A folder name per model: its position and the last part of its name or path."""
    slugs = []
    for i, r in enumerate(results, start=1):
        tail = Path(r.model.rstrip("/\\")).name or r.model
        slugs.append(f"{i}-" + (re.sub(r"[^A-Za-z0-9._-]+", "_", tail).strip("_") or "model"))
    return slugs


def compare(
    results: list[ModelResult], n: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> list[Comparison]:
    """Paired-bootstrap CER differences of every model after the first against the first."""
    pairs = (compare_pair(results[0], other, n, seed) for other in results[1:])
    return [c for c in pairs if c is not None]


def utterance_lines(result: ModelResult) -> str:
    """JSONL: one object per scored unit (reference, hypothesis, normalised forms, edits...)."""
    return "".join(
        json.dumps({"model": result.model, **s.to_dict()}, ensure_ascii=False) + "\n"
        for s in result.scores
    )


def write_report(
    out_dir: str | Path,
    results: list[ModelResult],
    manifest: str = "",
    bootstrap_n: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> list[Path]:
    """Write every report file under `out_dir`; returns the paths written."""
    out = Path(out_dir)
    slugs = model_slugs(results)
    comparisons = compare(results, bootstrap_n, seed)
    written: list[Path] = []
    figures: list[dict[str, bytes]] = []
    for result, slug in zip(results, slugs, strict=True):
        written.append(write_atomic(out / slug / "utterances.jsonl", utterance_lines(result)))
        figs = model_figures(result)
        for name, png in figs.items():
            written.append(write_atomic(out / slug / f"{name}.png", png))
        figures.append(figs)
    summary = json.dumps(summary_json(results, bootstrap_n, seed), ensure_ascii=False, indent=2)
    summary += "\n"
    written.append(write_atomic(out / "summary.json", summary))
    written.append(write_atomic(out / "report.md", markdown(results, slugs, comparisons, manifest)))
    written.append(
        write_atomic(out / "report.html", to_html(results, figures, comparisons, manifest))
    )
    return written


def manifest_slugs(manifests: list[str]) -> list[str]:
    """A folder name per manifest: its file's stem, with -2, -3... when two stems clash
    (compared case-insensitively, for case-insensitive file systems)."""
    taken = {INDEX_NAME}
    slugs = []
    for manifest in manifests:
        stem = re.sub(r"[^\w.+-]+", "_", Path(manifest).stem).strip("._") or "manifest"
        slug, n = stem, 1
        while slug.lower() in taken:
            n += 1
            slug = f"{stem}-{n}"
        taken.add(slug.lower())
        slugs.append(slug)
    return slugs


def by_manifest(results: list[ModelResult]) -> dict[str, list[ModelResult]]:
    """Results grouped by manifest, in order of first appearance; models keep their order."""
    groups: dict[str, list[ModelResult]] = {}
    for r in results:
        groups.setdefault(r.manifest, []).append(r)
    return groups


def write_reports(
    out_dir: str | Path,
    results: list[ModelResult],
    bootstrap_n: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> list[Path]:
    """`voice eval --report DIR`: with one manifest, `write_report` into DIR; with several, one
    such report per manifest in DIR/<manifest stem>/ and DIR/index.md listing them."""
    groups = by_manifest(results)
    if len(groups) == 1:
        [(manifest, group)] = groups.items()
        return write_report(out_dir, group, manifest, bootstrap_n, seed)
    out = Path(out_dir)
    slugs = manifest_slugs(list(groups))
    written: list[Path] = []
    for (manifest, group), slug in zip(groups.items(), slugs, strict=True):
        written += write_report(out / slug, group, manifest, bootstrap_n, seed)
    index = index_markdown(results, dict(zip(groups, slugs, strict=True)), bootstrap_n, seed)
    written.append(write_atomic(out / INDEX_NAME, index))
    return written


INDEX_HEADER = ("manifest", "report", "model", "CER", "ΔCER vs first", "95% CI", "utterances")


def index_markdown(
    results: list[ModelResult], slugs: dict[str, str], bootstrap_n: int, seed: int
) -> str:
    """index.md: each manifest's report folder and each model's CER on it."""
    rows = []
    for entry in summary_json(results, bootstrap_n, seed)["models"]:
        slug = slugs[entry["manifest"]]
        delta, ci = entry.get("cer_delta_vs_first"), entry.get("cer_delta_ci95")
        rows.append(
            [
                entry["manifest"], f"[{slug}/report.md]({slug}/report.md)", entry["model"],
                _pct(entry["cer"]), "-" if delta is None else f"{100 * delta:+.2f} pt",
                "-" if ci is None else f"[{100 * ci[0]:+.2f}, {100 * ci[1]:+.2f}] pt",
                str(entry["utterances"]),
            ]
        )  # fmt: skip
    lines = ["# Evaluation reports", ""]
    lines += [f"- {line}" for line in _header_lines(results, None)]
    lines += ["", f"One report per manifest. ΔCER is against the first model on the same "
              f"manifest, with a paired-bootstrap {CONFIDENCE:.0%} interval.", ""]  # fmt: skip
    lines += _md_table(INDEX_HEADER, rows)
    return "\n".join(lines) + "\n"


def model_figures(result: ModelResult) -> dict[str, bytes]:
    """The four plots for one model, as PNG bytes keyed by PLOT_NAMES."""
    unit = "call" if result.mode == "call" else "utterance"
    name = plots.ascii_label(Path(result.model).name or result.model)
    return {
        "cer_by_speaker": plots.cer_bar_chart(
            plots.cer_by_group(result.scores, lambda s: s.speaker),
            f"CER by speaker - {name}",
            "speaker",
        ),
        "cer_by_call": plots.cer_bar_chart(
            plots.cer_by_group(result.scores, lambda s: s.call_id), f"CER by call - {name}", "call"
        ),
        "error_types": plots.error_type_chart(result.scores, f"Error types - {name}"),
        "latency": plots.latency_histogram(result.latencies_ms, f"Latency per {unit} - {name}"),
    }


# --- shared table content ---------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _num(value: float | None, fmt: str = "{:.0f}") -> str:
    return "-" if value is None else fmt.format(value)


SUMMARY_HEADER = (
    "model", "CER", "MER", "WER", "S", "D", "I", "ref chars", "units", "utterances", "RTF",
    "p50 ms", "p95 ms", "VAD miss", "VAD false alarm",
)  # fmt: skip


def summary_rows(results: list[ModelResult]) -> list[list[str]]:
    rows = []
    for r in results:
        s = model_summary(r)
        rows.append(
            [
                r.model, _pct(s["cer"]), _pct(s["mer"]), _pct(s["wer"]),
                str(s["substitutions"]), str(s["deletions"]), str(s["insertions"]),
                str(s["reference_chars"]), str(len(r.scores)), str(s["utterances"]),
                _num(s["rtf"], "{:.3f}"), _num(s["latency_p50_ms"]), _num(s["latency_p95_ms"]),
                _pct(s.get("vad_miss_rate")), _pct(s.get("vad_false_alarm_rate")),
            ]
        )  # fmt: skip
    return rows


COMPARISON_HEADER = ("model", "CER", "ΔCER vs baseline", "95% CI", "paired units", "significant")


def comparison_rows(results: list[ModelResult], comparisons: list[Comparison]) -> list[list[str]]:
    cer = {r.model: r.corpus.cer.rate for r in results}
    rows = [[results[0].model + " (baseline)", _pct(cer[results[0].model]), "-", "-", "-", "-"]]
    for c in comparisons:
        rows.append(
            [
                c.model, _pct(cer[c.model]), f"{100 * c.diff:+.2f} pt",
                f"[{100 * c.lo:+.2f}, {100 * c.hi:+.2f}] pt", str(c.paired),
                "yes" if c.significant else "no",
            ]
        )  # fmt: skip
    return rows


WORST_HEADER = ("id", "call", "speaker", "CER", "S/D/I", "reference", "hypothesis")


def worst_rows(result: ModelResult, limit: int = WORST_SHOWN) -> list[list[str]]:
    worst = sorted(
        (s for s in result.scores if s.cer.errors),
        key=lambda s: (-s.cer.rate, -s.cer.errors, s.id),
    )[:limit]
    return [
        [
            s.id, s.call_id, s.speaker or "-", _pct(s.cer.rate),
            f"{s.cer.substitutions}/{s.cer.deletions}/{s.cer.insertions}",
            s.reference, s.hypothesis or "(empty)",
        ]
        for s in worst
    ]  # fmt: skip


ERROR_HEADER = ("metric", "rate", "hits", "substitutions", "deletions", "insertions", "ref tokens")


def error_rows(result: ModelResult) -> list[list[str]]:
    corpus = result.corpus
    rows = []
    for m in METRICS:
        c = corpus.counts(m)
        rows.append(
            [m.upper(), _pct(c.rate), str(c.hits), str(c.substitutions), str(c.deletions),
             str(c.insertions), str(c.reference_length)]
        )  # fmt: skip
    return rows


NOVELTY_HEADER = ("reference text", "CER", "MER", "WER", "units", "ref chars")


def novelty_rows(result: ModelResult) -> list[list[str]]:
    """CER/MER/WER on text seen in training vs unseen text (empty without `--seen-in`)."""
    rows = []
    for group, score in (result.by_novelty or {}).items():
        rates = [_pct(score.counts(m).rate if score.utterances else None) for m in METRICS]
        rows.append([f"{group} in training", *rates, str(score.utterances),
                     str(score.cer.reference_length)])  # fmt: skip
    return rows


def _header_lines(results: list[ModelResult], manifest: str | None) -> list[str]:
    """Manifest (unless None), mode, date, normalisation and how rates are computed."""
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    modes = sorted({r.mode for r in results})
    lines = [] if manifest is None else [f"Manifest: {manifest or '-'}"]
    lines += [f"Mode: {', '.join(modes)}", f"Generated: {when}"]
    norms = sorted({r.normalizer for r in results if r.normalizer})
    lines += [f"Normalisation: {n}" for n in norms]
    prompts = {r.model: r.initial_prompt for r in results if r.initial_prompt}
    lines += [f"Decoder prompt of {model}: {prompt}" for model, prompt in prompts.items()]
    lines.append(
        "Rates are corpus-level (total edits / total reference tokens). CER: every non-space "
        "character of the normalised text; MER: Han characters and English words; WER: "
        "pycantonese words."
    )
    return lines


# --- Markdown ---------------------------------------------------------------------------------


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_table(header, rows) -> list[str]:
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |"]
    lines.append("|" + "---|" * len(header))
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return lines


def markdown(
    results: list[ModelResult], slugs: list[str], comparisons: list[Comparison], manifest: str
) -> str:
    """report.md: summary, comparison, then per model its plots, error types and worst units."""
    lines = ["# Evaluation report", ""]
    lines += [f"- {line}" for line in _header_lines(results, manifest)]
    lines += ["", "## Summary", ""] + _md_table(SUMMARY_HEADER, summary_rows(results))
    if comparisons:
        lines += ["", "## Side by side", ""]
        lines.append(
            f"CER difference against the first model with a paired-bootstrap {CONFIDENCE:.0%} "
            f"interval ({BOOTSTRAP_RESAMPLES} resamples of the units both models scored); "
            "negative means fewer errors than the baseline."
        )
        lines += [""] + _md_table(COMPARISON_HEADER, comparison_rows(results, comparisons))
    for result, slug in zip(results, slugs, strict=True):
        lines += ["", f"## {result.model}", ""]
        lines += [f"Per-unit results: [`{slug}/utterances.jsonl`]({slug}/utterances.jsonl)"]
        if result.failures:
            lines += ["", f"{len(result.failures)} unit(s) could not be decoded:"]
            lines += [f"- {_md_cell(f)}" for f in result.failures[:20]]
        lines += ["", "### Error types", ""] + _md_table(ERROR_HEADER, error_rows(result))
        if novelty := novelty_rows(result):
            lines += ["", "### Seen and unseen text", ""] + _md_table(NOVELTY_HEADER, novelty)
        lines += [""] + [f"![{name}]({slug}/{name}.png)" for name in PLOT_NAMES]
        worst = worst_rows(result)
        lines += ["", "### Worst units", ""]
        lines += _md_table(WORST_HEADER, worst) if worst else ["No errors."]
    return "\n".join(lines) + "\n"


# --- HTML -------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,"Noto Sans CJK TC","PingFang HK","Microsoft JhengHei",sans-serif;
margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f0f0f0} td.num{text-align:right} img{max-width:100%;margin:.5em 0}
.meta{color:#555;font-size:13px}
"""


def _html_table(header, rows) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def to_html(
    results: list[ModelResult],
    figures: list[dict[str, bytes]],
    comparisons: list[Comparison],
    manifest: str,
) -> str:
    """report.html: the Markdown report's content, self-contained (plots inlined as base64)."""
    parts = ["<!DOCTYPE html>", '<html lang="zh-Hant-HK"><head><meta charset="utf-8">']
    parts.append(f"<title>Evaluation report</title><style>{_CSS}</style></head><body>")
    parts.append("<h1>Evaluation report</h1><div class='meta'>")
    parts += [f"<div>{html.escape(line)}</div>" for line in _header_lines(results, manifest)]
    parts.append("</div><h2>Summary</h2>" + _html_table(SUMMARY_HEADER, summary_rows(results)))
    if comparisons:
        parts.append("<h2>Side by side</h2>")
        parts.append(
            f"<p>CER difference against the first model with a paired-bootstrap "
            f"{CONFIDENCE:.0%} interval; negative means fewer errors than the baseline.</p>"
        )
        parts.append(_html_table(COMPARISON_HEADER, comparison_rows(results, comparisons)))
    for result, figs in zip(results, figures, strict=True):
        parts.append(f"<h2>{html.escape(result.model)}</h2>")
        if result.failures:
            items = "".join(f"<li>{html.escape(f)}</li>" for f in result.failures[:20])
            parts.append(
                f"<p>{len(result.failures)} unit(s) could not be decoded:</p><ul>{items}</ul>"
            )
        parts.append("<h3>Error types</h3>" + _html_table(ERROR_HEADER, error_rows(result)))
        if novelty := novelty_rows(result):
            parts.append("<h3>Seen and unseen text</h3>" + _html_table(NOVELTY_HEADER, novelty))
        parts += [_img(figs[name], name) for name in PLOT_NAMES if name in figs]
        worst = worst_rows(result)
        parts.append("<h3>Worst units</h3>")
        parts.append(_html_table(WORST_HEADER, worst) if worst else "<p>No errors.</p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


__all__ = [
    "BOOTSTRAP_RESAMPLES",
    "CONFIDENCE",
    "Comparison",
    "by_manifest",
    "compare",
    "index_markdown",
    "manifest_slugs",
    "write_reports",
    "model_figures",
    "model_slugs",
    "write_atomic",
    "write_report",
    "markdown",
    "to_html",
]
