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

__all__ = ["cpu_flags", "cpu_model", "git_commit", "machine", "now", "versions"]

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
    resumable run can span several sessions; this says which code measured each of them."""
    here = where or os.path.dirname(os.path.abspath(__file__))
    try:
        head = subprocess.run(["git", "-C", here, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
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


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
