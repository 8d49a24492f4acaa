"""Repeated, order-alternating comparisons behind two llama.cpp settings questions that a single
cost-curve row cannot settle on a noisy 2-core VM:

1. flash attention on vs off in outpace's llama.cpp backend: forwards of k tokens after a
   200-token context, and prefills of 203 and 400 tokens;
2. outpace's prefill (micro-batch 128, and 512) vs llama-cpp-python's own `eval` of the same ids.

    python benchmarks/llama_cpp_repeats.py --out benchmarks/results/llama-cpp-repeats.json

Run it on a quiet machine. Every figure is a list of repeats plus its median.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from outpace import models
from outpace.backends.llama_cpp import LlamaCppBackend
from outpace.policies import time_forwards


def ids(n: int) -> list[int]:
    return [(i * 7919 + 11) % 32000 for i in range(n)]


def prefill_s(backend: LlamaCppBackend, n: int) -> float:
    cache = backend.new_cache()
    t = time.perf_counter()
    backend.forward(cache, torch.tensor(ids(n)), last_only=True)
    return time.perf_counter() - t


def summary(runs: dict[str, list[float]]) -> dict[str, dict[str, object]]:
    return {k: {"median": round(statistics.median(v), 3), "runs": [round(x, 3) for x in v]} for k, v in runs.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", default="qwen2.5-coder-1.5b")
    ap.add_argument("--repeats", type=int, default=4)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    import llama_cpp

    path = Path(models.resolve(args.target).path_or_id)
    flash = {fa: LlamaCppBackend(path, threads=2, flash_attn=fa) for fa in (True, False)}
    flash_runs: dict[str, list[float]] = {}
    for rep in range(args.repeats):
        for fa in (True, False) if rep % 2 else (False, True):
            for k, s in time_forwards(flash[fa], 200, (1, 4, 5, 8), 3).items():
                flash_runs.setdefault(f"flash={fa} forward k={k} ms", []).append(1000 * s)
            for n in (203, 400):
                flash_runs.setdefault(f"flash={fa} prefill {n} s", []).append(prefill_s(flash[fa], n))
    del flash
    ours = {u: LlamaCppBackend(path, threads=2, n_ubatch=u) for u in (128, 512)}
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=4096, n_threads=2, verbose=False)
    prefill_runs: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        for n in (51, 203, 700):
            for u, backend in ours.items():
                prefill_runs.setdefault(f"outpace n_ubatch={u} prefill {n} s", []).append(prefill_s(backend, n))
            llm.reset()
            t = time.perf_counter()
            llm.eval(ids(n))
            prefill_runs.setdefault(f"llama-cpp-python prefill {n} s", []).append(time.perf_counter() - t)
    result = {"target": args.target, "flash_attention": summary(flash_runs), "prefill": summary(prefill_runs)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    for part in ("flash_attention", "prefill"):
        for k, v in result[part].items():  # type: ignore[union-attr]
            print(f"{k}: median {v['median']}  runs {v['runs']}")


if __name__ == "__main__":
    main()
