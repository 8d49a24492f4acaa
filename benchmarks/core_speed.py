"""Issue 2's measurement: tokens/s of autoregressive decoding, the 0.5B draft model and prompt
lookup on the 1.5B target (torch, bf16), greedy, side by side on the same prompts, plus
transformers `generate` on the same loaded model. Methods are interleaved per prompt.

    python benchmarks/core_speed.py --prompts 10 --max-new-tokens 128 --out benchmarks/results/core-speed.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from outpace.decoder import GenerationConfig
from outpace.engine import EngineSpec, build

QUESTIONS = Path(__file__).resolve().parent.parent / "src/outpace/data/spec_bench/question.jsonl"
METHODS = ["none", "draft-model:qwen2.5-coder-0.5b,quant=int4", "draft-model:qwen2.5-coder-0.5b", "prompt-lookup"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=10)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--draft-length", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    qs = [json.loads(line) for line in QUESTIONS.open()]
    step = len(qs) // args.prompts
    chosen = [qs[i * step] for i in range(args.prompts)]  # spread over all six tasks
    engines = {m: build(EngineSpec("qwen2.5-coder-1.5b", m, "bfloat16", cost_profile=False)) for m in METHODS}
    cfg = GenerationConfig(max_new_tokens=args.max_new_tokens, draft_length=args.draft_length, ignore_eos=True)
    for e in engines.values():  # warm-up
        e.decoder.generate([{"role": "user", "content": "Hello"}], GenerationConfig(max_new_tokens=8))
    model = engines["none"].target.backend.model
    rows = []
    for q in chosen:
        ids = engines["none"].decoder.encode([{"role": "user", "content": q["turns"][0]}])
        ref = None
        for m, e in engines.items():
            r = e.decoder.generate(ids, cfg)
            ref = r.tokens if m == "none" else ref
            rows.append({"qid": q["question_id"], "task": q["category"], "method": m,
                         "tokens_per_s": r.stats.tokens_per_s, "tau": r.stats.tau,
                         "equal_to_ar": r.tokens == ref, **{f"{k}_s": v for k, v in r.stats.as_dict()["time_s"].items()}})
            print(json.dumps(rows[-1]), flush=True)
        t = time.perf_counter()
        out = model.generate(torch.tensor([ids]), max_new_tokens=args.max_new_tokens,
                             min_new_tokens=args.max_new_tokens, do_sample=False)
        dt = time.perf_counter() - t
        rows.append({"qid": q["question_id"], "task": q["category"], "method": "hf-generate",
                     "tokens_per_s": args.max_new_tokens / dt, "tau": 1.0,
                     "equal_to_ar": out[0, len(ids):].tolist() == ref})
        print(json.dumps(rows[-1]), flush=True)
    summary = {}
    for m in [*METHODS, "hf-generate"]:
        sel = [r for r in rows if r["method"] == m]
        summary[m] = {
            "median_tokens_per_s": statistics.median(r["tokens_per_s"] for r in sel),
            "mean_tokens_per_s": statistics.mean(r["tokens_per_s"] for r in sel),
            "mean_tau": statistics.mean(r["tau"] for r in sel),
            "equal_to_ar": sum(r["equal_to_ar"] for r in sel) / len(sel),
        }
    base = summary["none"]["mean_tokens_per_s"]
    for m in summary:
        summary[m]["speedup_vs_ar"] = summary[m]["mean_tokens_per_s"] / base
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"args": vars(args) | {"out": str(args.out)}, "summary": summary, "rows": rows}, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
