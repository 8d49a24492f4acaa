"""outpace: lossless speculative decoding for LLMs on your own hardware.

The package root stays light (no torch import) so that `outpace models ...` starts fast; the
public names below load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from outpace.errors import OutpaceError

__version__ = "0.1.0"

_LAZY = {
    "Decoder": "outpace.decoder",
    "GenerationConfig": "outpace.decoder",
    "SamplingConfig": "outpace.sampling",
    "Draft": "outpace.types",
    "VerifyResult": "outpace.types",
    "EngineSpec": "outpace.engine",
    "build": "outpace.engine",
}

__all__ = ["OutpaceError", *_LAZY]  # noqa: PLE0604 (the lazy names are strings)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'outpace' has no attribute {name!r}")
