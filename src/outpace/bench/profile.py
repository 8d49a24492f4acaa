"""``outpace bench profile``: measure this machine's step costs as a cost profile.

After a prefill of `context` tokens, one target forward over k tokens is timed for each k
(the cache rolled back after each), ``repeats`` times after one warm-up; the median is kept.
The draft cost is the median time of one single-token forward of the draft model after the
same context. The result is the JSON format of `outpace.bench.costs`, with the settings under
``"measured"``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from outpace.errors import OutpaceError
from outpace.policies import time_forwards

DEFAULT_KS = (1, 2, 4, 8, 16)


def measure(target: str, dtype: str, draft: str | None, ks: Sequence[int] = DEFAULT_KS, context: int = 200,
            repeats: int = 5, quant: str | None = None, backend: str = "torch",
            say: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """A cost profile of `target` (and `draft`, None = no draft model) on this machine, on
    `backend` (``torch`` or ``llama.cpp``); k = 1 is always measured (it is also the
    autoregressive step)."""
    if not ks or any(k < 1 for k in ks):
        raise OutpaceError(f"verify sizes must be integers >= 1, got {list(ks)}")
    if context < 1 or repeats < 1:
        raise OutpaceError("--context and --repeats must be >= 1")
    from outpace.bench.machine import cpu_model
    from outpace.engine import load_cached

    say(f"loading {target} ({backend}, {dtype}{', ' + quant if quant else ''}) ...")
    model = load_cached(target, dtype, quant, backend=backend)
    say(f"timing target forwards of k = {', '.join(map(str, ks))} tokens ...")
    verify = _ms(time_forwards(model.backend, context, sorted(set(ks) | {1}), repeats))
    draft_ms = 0.0
    if draft:
        say(f"loading draft {draft} ({dtype}) ...")
        d = load_cached(draft, dtype, None, backend=backend)
        draft_ms = _ms(time_forwards(d.backend, context, [1], repeats))[1]
    import torch

    return {
        "name": f"measured {model.name} {dtype if backend == 'torch' else backend}",
        "verify_ms": {str(k): round(v, 3) for k, v in verify.items()},
        "draft_ms_per_token": round(draft_ms, 3),
        "ar_ms": round(verify[1], 3),  # an autoregressive step is a forward of one token
        "measured": {"target": target, "draft": draft, "dtype": dtype, "quant": quant, "backend": backend,
                     "context_tokens": context,
                     "repeats": repeats, "torch_threads": torch.get_num_threads(), "cpu": cpu_model()},
    }


def _ms(seconds: dict[int, float]) -> dict[int, float]:
    return {k: s * 1000 for k, s in seconds.items()}
