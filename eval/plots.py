"""Report figures as PNG bytes (matplotlib, Agg backend). Labels stay ASCII: the bundled fonts
may lack CJK glyphs, so Chinese text goes in the report's tables, never in a plot."""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Callable, Sequence

from eval.metrics import METRICS, EditCounts, UtteranceScore

MAX_BARS = 40  # CER-by-call/speaker plots show at most this many (the worst ones)
FIGSIZE = (8.0, 3.6)  # inches
DPI = 100


def ascii_label(text: str) -> str:
    """`text` with non-ASCII characters replaced by '?' (plot-safe)."""
    return text.encode("ascii", "replace").decode("ascii") or "-"


def cer_by_group(
    scores: Sequence[UtteranceScore], key: Callable[[UtteranceScore], str]
) -> list[tuple[str, EditCounts]]:
    """Corpus-level CER counts per group, worst rate first."""
    groups: dict[str, EditCounts] = defaultdict(EditCounts)
    for s in scores:
        groups[key(s) or "-"] += s.cer
    return sorted(groups.items(), key=lambda kv: (-kv[1].rate, kv[0]))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=DPI)
    _pyplot().close(fig)
    return buf.getvalue()


def cer_bar_chart(groups: list[tuple[str, EditCounts]], title: str, xlabel: str) -> bytes:
    """Bars of CER (%) per group, at most MAX_BARS of the worst."""
    plt = _pyplot()
    shown = groups[:MAX_BARS]
    fig, ax = plt.subplots(figsize=FIGSIZE)
    labels = [ascii_label(name) for name, _ in shown]
    ax.bar(range(len(shown)), [100 * c.rate for _, c in shown], color="#4878a8")
    ax.set_xticks(range(len(shown)), labels, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("CER (%)")
    ax.set_xlabel(
        xlabel + (f" (worst {MAX_BARS} of {len(groups)})" if len(groups) > MAX_BARS else "")
    )
    ax.set_title(title)
    return _png(fig)


def error_type_chart(scores: Sequence[UtteranceScore], title: str) -> bytes:
    """Substitutions, deletions and insertions as % of reference tokens, per metric."""
    plt = _pyplot()
    totals = {m: sum((s.counts(m) for s in scores), EditCounts()) for m in METRICS}
    fig, ax = plt.subplots(figsize=FIGSIZE)
    width = 0.25
    kinds = (("substitutions", "#d62728"), ("deletions", "#ff7f0e"), ("insertions", "#2ca02c"))
    for k, (kind, color) in enumerate(kinds):
        values = [
            100 * getattr(totals[m], kind) / max(1, totals[m].reference_length) for m in METRICS
        ]
        ax.bar(
            [i + (k - 1) * width for i in range(len(METRICS))],
            values,
            width,
            label=kind,
            color=color,
        )
    ax.set_xticks(range(len(METRICS)), [m.upper() for m in METRICS])
    ax.set_ylabel("% of reference tokens")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _png(fig)


def latency_histogram(latencies_ms: Sequence[float], title: str) -> bytes:
    """Histogram of per-utterance latency (ms) with p50 and p95 marked."""
    import numpy as np

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=FIGSIZE)
    if latencies_ms:
        values = np.asarray(latencies_ms, dtype=float)
        ax.hist(values, bins=min(40, max(5, len(values) // 3)), color="#4878a8")
        for q, style in ((50, "--"), (95, ":")):
            p = float(np.percentile(values, q))
            ax.axvline(p, color="black", linestyle=style, label=f"p{q} {p:.0f} ms")
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no latencies recorded", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("utterances")
    ax.set_title(title)
    return _png(fig)


__all__ = ["ascii_label", "cer_by_group", "cer_bar_chart", "error_type_chart", "latency_histogram"]
