"""What machine and which library versions a run used (recorded in ``sessions.json``)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

from outpace.hardware import cpu_flags, cpu_model

__all__ = ["cpu_flags", "cpu_model", "cpu_times", "git_commit", "machine", "now", "steal_share", "versions"]

LIBRARIES = ("torch", "transformers", "llama-cpp-python", "outpace", "numpy")


def versions() -> dict[str, str]:
    """Python and library versions ('not installed' when absent)."""
    out = {"python": sys.version.split()[0]}
    for lib in LIBRARIES:
        try:
            out[lib] = importlib.metadata.version(lib)
        except importlib.metadata.PackageNotFoundError:
            out[lib] = "not installed"
    commit = git_commit()
    if commit:
        out["outpace commit"] = commit
    return out


def git_commit(where: str | None = None) -> str | None:
    """The commit of the git checkout holding `where` (default: this outpace source tree), with
    ``-dirty`` when tracked files have uncommitted changes; None outside a git checkout. A
    resumable run can span several sessions; this says which code measured each of them.
    Committed benchmark results (``benchmarks/results``) are data, not code: a run whose own
    records are not committed yet is not marked dirty by them."""
    here = where or os.path.dirname(os.path.abspath(__file__))
    try:
        head = subprocess.run(["git", "-C", here, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no",
                                "--", ":(top,exclude)benchmarks/results"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}-dirty" if dirty else head or None


def machine() -> dict[str, Any]:
    """CPU, cores, torch threads, OS."""
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cores": os.cpu_count(),
        "os": platform.platform(),
    }
    if "torch" in sys.modules:
        info["torch_threads"] = sys.modules["torch"].get_num_threads()
    return info


CpuTimes = tuple[int, int]  # (steal, total) clock ticks of all CPUs since boot


def cpu_times(stat: str = "/proc/stat") -> CpuTimes | None:
    """Steal and total CPU time from the first line of /proc/stat; None where it is unavailable
    (not Linux). Steal is time the hypervisor gave to other guests while this VM wanted to run:
    on a shared VM it slows every method and makes timings noisy."""
    try:
        with open(stat, encoding="ascii") as f:
            head = f.readline().split()
    except OSError:
        return None
    if len(head) < 9 or head[0] != "cpu":
        return None
    ticks = [int(x) for x in head[1:9]]  # user nice system idle iowait irq softirq steal (guest is in user)
    return ticks[7], sum(ticks)


def steal_share(before: CpuTimes | None, after: CpuTimes | None) -> float | None:
    """The share of the machine's CPU time stolen between two `cpu_times` readings."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
