"""Issue 4's exploration of what changes the llama.cpp cost curve on this machine: weight
format (Q4_K_M as packaged; Q4_0 and Q8_0, which have repacked CPU kernels, requantized by
`outpace models quantize`), threads, and the micro-batch size of prefill. For each variant:
ms of one forward over k tokens after a 200-token context (median of 5 after a warm-up), and
ms to prefill 512 tokens (median of 2).

    python benchmarks/cost_curves.py --out benchmarks/results/cost-curves.json

Run it on a quiet machine; it prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from outpace import models
from outpace.backends.llama_cpp import LlamaCppBackend, requantize
from outpace.bench.profile import time_forwards

KS = (1, 2, 3, 4, 5, 6, 8, 12, 16)


def prefill_ms(backend: LlamaCppBackend, n: int, repeats: int = 2) -> float:
    ids = torch.tensor([(i * 7919 + 11) % 32000 for i in range(n)])
    times = []
    for _ in range(repeats):
        cache = backend.new_cache()
        t0 = time.perf_counter()
        backend.forward(cache, ids, last_only=True)
        times.append((time.perf_counter() - t0) * 1000)
        del cache
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", default="qwen2.5-coder-1.5b")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    packaged = Path(models.resolve(args.target).path_or_id)
    files = {"q4_k_m (packaged)": packaged,
             "q4_0": requantize(args.target, "q4_0"), "q8_0": requantize(args.target, "q8_0")}
    variants = [(f, 2, 512) for f in files] + [(f, 1, 512) for f in files]
    variants += [("q4_k_m (packaged)", 2, b) for b in (64, 128, 256)]
    rows = []
    for fmt, threads, batch in variants:
        backend = LlamaCppBackend(files[fmt], threads=threads, n_batch=batch, n_ubatch=batch)
        ms = time_forwards(backend, 200, KS, repeats=5)
        rows.append({"format": fmt, "threads": threads, "n_batch": batch, "forward_ms": ms,
                     "prefill_512_ms": prefill_ms(backend, 512)})
        print(json.dumps(rows[-1]), flush=True)
        del backend
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"target": args.target, "ks": KS, "rows": rows}, indent=1) + "\n")
    head = "| format | threads | n_batch = n_ubatch | " + " | ".join(f"k={k}" for k in KS) + " | prefill 512 |"
    print(head + "\n|" + "---|" * (len(KS) + 4))
    for r in rows:
        cells = " | ".join(f"{r['forward_ms'][k]:.0f}" for k in KS)
        print(f"| {r['format']} | {r['threads']} | {r['n_batch']} | {cells} | {r['prefill_512_ms']:.0f} |")


if __name__ == "__main__":
    main()
