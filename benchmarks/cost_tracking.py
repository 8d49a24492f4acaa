"""Does the cost-aware policy know what a step costs while it decodes? Belief against measurement.

`AdaptiveDraftLength` picks budgets from its `CostModel`: the cost of a forward over n tokens
relative to one token, started from the cached profile and refined by every step. If that belief
lagged the real relative cost (a profile taken at another context length, a machine whose
compute and memory speeds drift apart, sizes a task rarely runs), the policy would draft where
drafting does not pay. This script runs `ar` and one `METHOD@adaptive` turn by turn on the
Spec-Bench subset, as `outpace bench` does (one shared target, the same prompts, every turn its
own prefill), times every target forward through a delegating backend, and prints per task and
forward size n:

- belief: verify(n) / verify(1) of the decoder's cost model just before that forward;
- measured: that forward's time over the median of the same decoder's last 20 single-token
  forwards (so a drifting machine is compared with itself at that moment);

and each task's decode-phase speed (new tokens per second after the prefill) against `ar`.
`--sweep` instead profiles the relative cost (`time_forwards`, median of 7) at cached contexts of
64 to 2,048 tokens, with and without another sequence of 3,000 tokens parked in the shared
llama.cpp context, in two passes a few minutes apart: what moves it. Usage (3 minutes each for 3
prompts per task on 2 cores):

    python benchmarks/cost_tracking.py --per-task 3 --drafter rest --out cost-tracking.json
    python benchmarks/cost_tracking.py --sweep --out cost-sweep.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict, deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from outpace.backends.base import ForwardOutput
from outpace.bench.questions import load_suite, select, task_order
from outpace.bench.run import prompt_ids
from outpace.decoder import Decoder, GenerationConfig
from outpace.engine import EngineSpec, build
from outpace.policies import CostModel, time_forwards


class TimedBackend:
    """A `Backend` that delegates to another and logs (label, tokens, seconds, belief) per forward."""

    def __init__(self, inner: Any, log: list[tuple[str, int, float, float | None]]) -> None:
        self.inner, self.log = inner, log
        self.label = ""  # set by the caller before each generation, with the decoder's costs
        self.costs: CostModel | None = None
        self.name, self.capabilities = inner.name, inner.capabilities
        self.vocab_size, self.max_context = inner.vocab_size, inner.max_context

    def new_cache(self) -> Any:
        return self.inner.new_cache()

    def cache_len(self, cache: Any) -> int:
        return int(self.inner.cache_len(cache))

    def rollback(self, cache: Any, length: int) -> None:
        self.inner.rollback(cache, length)

    def keep(self, cache: Any, start: int, rows: Sequence[int]) -> None:
        self.inner.keep(cache, start, rows)

    def forward(self, cache: Any, tokens: torch.Tensor, parents: torch.Tensor | None = None,
                hidden_layers: Sequence[int] = (), last_only: bool = False) -> ForwardOutput:
        n = int(tokens.shape[0])  # tokens: [n]
        belief = None if self.costs is None else self.costs.verify(n) / self.costs.verify(1)
        t = time.perf_counter()
        out = self.inner.forward(cache, tokens, parents, hidden_layers, last_only)
        self.log.append((self.label, n, time.perf_counter() - t, belief))
        return out  # type: ignore[no-any-return]


def belief_vs_measured(log: Sequence[tuple[str, str, int, float, float | None]], method: str,
                       max_n: int) -> dict[str, dict[int, dict[str, float]]]:
    """Per task and size n in 2..max_n: forwards, mean belief and median measured relative cost."""
    recent: deque[float] = deque(maxlen=20)
    pairs: dict[str, dict[int, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    for label, task, n, seconds, belief in log:
        if label != method:
            continue
        if n == 1:
            recent.append(seconds)
        elif n <= max_n and belief is not None and len(recent) >= 5:  # larger n: a prefill
            pairs[task][n].append((belief, seconds / statistics.median(recent)))
    return {task: {n: {"forwards": len(v), "belief": statistics.fmean(b for b, _ in v),
                       "measured": statistics.median(m for _, m in v)} for n, v in sorted(by_n.items())}
            for task, by_n in pairs.items()}


def sweep(backend: Any, passes: int = 2, sizes: Sequence[int] = (1, 2, 3, 4, 5, 8)) -> list[dict[str, Any]]:
    """Forward times by cached context, and with a parked sequence, `passes` times over."""
    rows = []
    for p in range(passes):
        for context, parked in [(c, 0) for c in (64, 128, 256, 512, 1024, 2048)] + [(300, 1500), (300, 3000)]:
            other = None
            if parked:
                other = backend.new_cache()
                backend.forward(other, torch.tensor([(i * 7919 + 11) % 32000 for i in range(parked)]), last_only=True)
            ms = {k: 1000 * s for k, s in time_forwards(backend, context, sizes, 7).items()}
            rows.append({"pass": p + 1, "context": context, "parked": parked, "forward_ms": ms,
                         "relative": {k: ms[k] / ms[1] for k in sizes}})
            r = rows[-1]
            print(f"| {p + 1} | {context} | {parked} | " + " | ".join(f"{ms[k]:.1f}" for k in sizes)
                  + " | " + " | ".join(f"{r['relative'][k]:.2f}" for k in sizes[1:]) + " |", flush=True)
            if other is not None:
                backend.rollback(other, 0)
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target", default="qwen2.5-coder-1.5b")
    ap.add_argument("--drafter", default="prompt-lookup", help="a drafter spec, as outpace bench takes")
    ap.add_argument("--per-task", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--draft-length", type=int, default=4)
    ap.add_argument("--out", type=Path, help="write the tables as JSON here too")
    ap.add_argument("--sweep", action="store_true", help="profile relative costs by context instead (see above)")
    args = ap.parse_args(argv)
    engine = build(EngineSpec(args.target, args.drafter, "float32", backend="llama.cpp"))
    if args.sweep:
        print("| pass | context | parked | ms of 1, 2, 3, 4, 5, 8 tokens |||||| relative 2, 3, 4, 5, 8 |||||")
        print("|---:|---:|---:|" + "---:|" * 11)
        rows = sweep(engine.decoder.target)
        if args.out:
            args.out.write_text(json.dumps({"target": args.target, "rows": rows}, indent=1))
        return
    inner = engine.decoder
    flat: list[tuple[str, int, float, float | None]] = []
    timed = TimedBackend(inner.target, flat)
    decoders = {"ar": Decoder(timed, inner.tokenizer, eos_ids=sorted(inner.eos_ids)),
                args.drafter: Decoder(timed, inner.tokenizer, inner.drafter, sorted(inner.eos_ids), inner.costs)}
    questions = select(load_suite("spec-bench", None)[0], args.per_task)
    log: list[tuple[str, str, int, float, float | None]] = []
    decode: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])  # tokens, seconds
    for i, q in enumerate(questions):
        answers: dict[int, str] = {}
        for turn in range(len(q.turns)):
            ids = prompt_ids(decoders["ar"], q, turn + 1, answers)
            for label, decoder in decoders.items():
                timed.label, timed.costs = label, decoder.costs
                cfg = GenerationConfig(args.max_new_tokens, draft_length=args.draft_length,
                                       adaptive=decoder.drafter is not None, cache_prompt=False)
                start = len(flat)
                result = decoder.generate(ids, cfg)
                log += [(lab, q.task, n, s, b) for lab, n, s, b in flat[start:]]
                decode[(q.task, label)][0] += result.stats.new_tokens
                decode[(q.task, label)][1] += result.stats.decode_s
                if label == "ar":
                    answers[turn + 1] = result.text
        print(f"[{i + 1}/{len(questions)}] {q.task} {q.question_id}", flush=True)
    table = belief_vs_measured(log, args.drafter, args.draft_length + 1)
    tasks = task_order(q.task for q in questions)
    speed = {t: (decode[(t, args.drafter)][0] / decode[(t, args.drafter)][1])
             / (decode[(t, "ar")][0] / decode[(t, "ar")][1]) for t in tasks}
    print(f"\n| Task | {args.drafter}@adaptive decode speed / ar | n: forwards, belief -> measured relative cost |")
    print("|:---|---:|:---|")
    for t in tasks:
        cells = ", ".join(f"{n}: {c['forwards']}, {c['belief']:.2f} -> {c['measured']:.2f}"
                          for n, c in table.get(t, {}).items())
        print(f"| {t} | {speed[t]:.3f} | {cells} |")
    if args.out:
        args.out.write_text(json.dumps({"args": vars(args) | {"out": str(args.out)}, "speed_vs_ar": speed,
                                        "relative_cost": table}, indent=1))


if __name__ == "__main__":
    main()
