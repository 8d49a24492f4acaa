"""What machine and which library versions a run used (recorded in ``sessions.json``)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from datetime import UTC, datetime
from typing import Any

from outpace.hardware import cpu_flags, cpu_model

__all__ = ["cpu_flags", "cpu_model", "machine", "now", "versions"]

LIBRARIES = ("torch", "transformers", "llama-cpp-python", "outpace", "numpy")


def versions() -> dict[str, str]:
    """Python and library versions ('not installed' when absent)."""
    out = {"python": sys.version.split()[0]}
    for lib in LIBRARIES:
        try:
            out[lib] = importlib.metadata.version(lib)
        except importlib.metadata.PackageNotFoundError:
            out[lib] = "not installed"
    return out


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
