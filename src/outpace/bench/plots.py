"""PNG plots of a run (matplotlib, imported lazily; install with ``pip install 'outpace[bench]'``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from outpace.bench.metrics import Spread, TimeSplit

MATPLOTLIB_MISSING = "matplotlib is not installed (pip install 'outpace[bench]' or pip install matplotlib)"


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def speedup_plot(speedups: Mapping[str, Mapping[str, Spread | None]], columns: Sequence[str], path: Path) -> None:
    """Grouped bars: one group per column (task titles, then Overall), one bar per method;
    error bars span min to max over repeats."""
    plt = _pyplot()
    methods = list(speedups)
    width = 0.8 / max(1, len(methods))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(columns) + 2), 4.6 + 0.2 * len(methods)))
    for i, method in enumerate(methods):
        xs, ys, lo, hi = [], [], [], []
        for j, col in enumerate(columns):
            s = speedups[method].get(col)
            if s is None:
                continue
            xs.append(j + (i - (len(methods) - 1) / 2) * width)
            ys.append(s.median)
            lo.append(s.median - s.lo)
            hi.append(s.hi - s.median)
        ax.bar(xs, ys, width, label=method, yerr=[lo, hi] if any(lo + hi) else None, capsize=2)
    ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
    ax.set_xticks(range(len(columns)), list(columns))
    ax.set_ylabel("speedup (x)")
    ax.set_title("Speedup per task")
    ax.legend(fontsize=8, ncol=min(3, max(1, len(methods))), loc="upper center", bbox_to_anchor=(0.5, -0.1))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def accepted_plot(histograms: Mapping[str, Mapping[int, int]], path: Path) -> None:
    """Share of steps that accepted 0, 1, 2, ... draft tokens, one bar series per method."""
    plt = _pyplot()
    methods = [m for m, h in histograms.items() if sum(h.values())]
    longest = max((max(h) for m, h in histograms.items() if h), default=0)
    width = 0.8 / max(1, len(methods))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * (longest + 1) + 2), 4.0))
    for i, method in enumerate(methods):
        h = histograms[method]
        total = sum(h.values())
        xs = [k + (i - (len(methods) - 1) / 2) * width for k in range(longest + 1)]
        ax.bar(xs, [h.get(k, 0) / total for k in range(longest + 1)], width, label=method)
    ax.set_xticks(range(longest + 1))
    ax.set_xlabel("draft tokens accepted in a step")
    ax.set_ylabel("share of steps")
    ax.set_title("Distribution of accepted lengths")
    if methods:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def time_split_plot(splits: Mapping[str, TimeSplit], path: Path) -> None:
    """Stacked horizontal bars: share of wall time in prefill, draft, verify, other, untracked."""
    plt = _pyplot()
    methods = list(splits)
    parts = ["prefill", "draft", "verify", "other", "untracked"]
    fig, ax = plt.subplots(figsize=(7.0, 0.5 * len(methods) + 1.6))
    left = [0.0] * len(methods)
    for part in parts:
        widths = [splits[m].shares()[part] for m in methods]
        ax.barh(methods, widths, left=left, label=part)
        left = [a + b for a, b in zip(left, widths)]
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of wall time")
    ax.set_title("Where the time goes")
    ax.legend(fontsize=8, ncol=5, loc="upper center", bbox_to_anchor=(0.5, -0.25))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
