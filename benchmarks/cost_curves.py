"""Issue 4's exploration of what changes the llama.cpp cost curve on this machine: weight
format (Q4_K_M as packaged; Q4_0 and Q8_0, which have repacked CPU kernels, requantized by
`outpace models quantize`), threads, the micro-batch size of prefill, and flash attention
(llama.cpp turns it on by default where the device supports it; llama-cpp-python turns it off).
For each variant: ms of one forward over k tokens after a 200-token context (median of 5 after a
warm-up), and ms to prefill 64, 200 and 512 tokens (median of 2).

    python benchmarks/cost_curves.py --out benchmarks/results/cost-curves.json
    python benchmarks/cost_curves.py --groups flash --out benchmarks/results/cost-curves-flash.json

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
from outpace.policies import time_forwards

KS = (1, 2, 3, 4, 5, 6, 8, 12, 16)


PREFILLS = (64, 200, 512)


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
    ap.add_argument("--groups", default="format,threads,ubatch,flash", help="which comparisons to run")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    groups = set(args.groups.split(","))
    packaged = Path(models.resolve(args.target).path_or_id)
    files = {"q4_k_m (packaged)": packaged}
    if "format" in groups:
        files |= {"q4_0": requantize(args.target, "q4_0"), "q8_0": requantize(args.target, "q8_0")}
    variants = []  # (format, threads, n_ubatch, flash attention: None = llama.cpp's choice)
    if groups & {"format", "threads"}:
        variants += [(f, 2, 512, None) for f in files]
    if "threads" in groups:
        variants += [(f, 1, 512, None) for f in files]
    if "ubatch" in groups:
        variants += [("q4_k_m (packaged)", 2, b, None) for b in (64, 128, 256)]
    if "flash" in groups:
        variants += [("q4_k_m (packaged)", 2, 128, fa) for fa in (None, True, False)]
    rows = []
    for fmt, threads, ubatch, flash in variants:
        backend = LlamaCppBackend(files[fmt], threads=threads, n_ubatch=ubatch, flash_attn=flash)
        ms = {k: s * 1000 for k, s in time_forwards(backend, 200, KS, repeats=5).items()}
        rows.append({"format": fmt, "threads": threads, "n_ubatch": ubatch, "flash_attn": flash,
                     "forward_ms": ms, "prefill_ms": {n: prefill_ms(backend, n) for n in PREFILLS}})
        print(json.dumps(rows[-1]), flush=True)
        del backend
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"target": args.target, "ks": KS, "rows": rows}, indent=1) + "\n")
    head = "| format | threads | n_ubatch | flash attn | " + " | ".join(f"k={k}" for k in KS)
    head += " | " + " | ".join(f"prefill {n}" for n in PREFILLS) + " |"
    print(head + "\n|" + "---|" * (len(KS) + len(PREFILLS) + 4))
    for r in rows:
        cells = " | ".join(f"{r['forward_ms'][k]:.0f}" for k in KS)
        pre = " | ".join(f"{r['prefill_ms'][n]:.0f}" for n in PREFILLS)
        fa = {None: "auto", True: "on", False: "off"}[r["flash_attn"]]
        print(f"| {r['format']} | {r['threads']} | {r['n_ubatch']} | {fa} | {cells} | {pre} |")


if __name__ == "__main__":
    main()
