"""STAND's best-of-N setting, measured: N samples of the same prompt at temperature > 0.

STAND (Song et al., 2025) targets test-time scaling, where a model samples many answers to one
prompt. Its n-gram module stores the target's next-token distributions, and outpace keeps that
module across the samples of one prompt (``stand``, i.e. ``share=prompt``), so sample i drafts
from what samples 1..i-1 taught it. This script measures that claim against the same drafter
starting afresh every sample (``stand:share=never``) and against plain decoding (``ar``):
mean accepted tokens (tau) and speed per sample index, methods interleaved per sample.

    python benchmarks/best_of_n.py --out benchmarks/results/stand-best-of-n

Every method is an `outpace bench` method (any drafter spec can be given with --methods), run
through the same `OutpaceMethod` as the benchmark; sample i of every method uses the same seed.
Sampling is lossless, so outputs differ between methods only through how each consumes the RNG.
Writes ``records.jsonl`` (one line per generation) and ``report.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from tqdm import tqdm  # type: ignore[import-untyped]

from outpace.backends.torch import set_threads
from outpace.bench import machine
from outpace.bench.config import RunConfig
from outpace.bench.methods import Settings, build_methods, check_methods
from outpace.bench.questions import load_suite, select


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    methods = tuple(args.methods.split(","))
    config = RunConfig(target=args.target, methods=methods, dtype="float32", backend=args.backend,
                       threads=args.threads, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                       draft_length=args.draft_length, seed=args.seed)
    questions, _ = load_suite("spec-bench", None)
    chosen = [q for q in select(questions, None) if q.task == args.task][: args.prompts]
    if not chosen:
        raise SystemExit(f"no Spec-Bench prompts in task {args.task!r}")
    check_methods(list(methods), config.dtype)
    set_threads(args.threads)
    built, skipped, encoder = build_methods(config, methods, lambda m: tqdm.write(m, file=sys.stderr))
    if skipped:
        raise SystemExit(f"cannot run: {skipped}")
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    total = len(chosen) * args.samples * len(methods)
    with tqdm(total=total, unit="gen", desc="best-of-n") as bar:
        # warm up on a prompt of another task: a kept module must not start a measured prompt early
        warm = encoder.encode(next(q for q in questions if q.task != args.task).turns[0])
        for m in built.values():  # warm-up, not recorded
            m.generate(warm, Settings(8, args.temperature, seed=args.seed))
        for p, q in enumerate(chosen):
            ids = encoder.encode(q.turns[0])
            for i in range(args.samples):
                settings = Settings(args.max_new_tokens, args.temperature, seed=args.seed + i,
                                    draft_length=args.draft_length)
                order = methods[(p + i) % len(methods):] + methods[: (p + i) % len(methods)]
                for name in order:
                    g = built[name].generate(ids, settings)
                    rows.append({"method": name, "question_id": q.question_id, "sample": i + 1,
                                 "new_tokens": len(g.tokens), "wall_s": g.wall_s, "steps": g.steps,
                                 "accepted": sum(g.accepted_lengths or ()), "text": g.text})
                    bar.update()
    with open(args.out / "records.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    (args.out / "report.md").write_text(report(rows, methods, args, chosen), encoding="utf-8")
    print(args.out / "report.md")
    return 0


def tau(rows: list[dict[str, Any]]) -> float:
    steps = sum(r["steps"] for r in rows)
    return (sum(r["accepted"] for r in rows) + steps) / steps if steps else float("nan")


def speed(rows: list[dict[str, Any]]) -> float:
    """Mean over prompts of tokens/s (Spec-Bench's definition)."""
    return statistics.fmean(r["new_tokens"] / r["wall_s"] for r in rows if r["wall_s"] > 0)


def report(rows: list[dict[str, Any]], methods: tuple[str, ...], args: argparse.Namespace, chosen: list[Any]) -> str:
    by: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by[(r["method"], r["sample"])].append(r)
    samples = range(1, args.samples + 1)
    head = ["method", *(f"sample {i}" for i in samples), "all samples"]

    def table(cell: Any) -> list[str]:
        lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
        for m in methods:
            mine = [r for r in rows if r["method"] == m]
            lines.append("| " + " | ".join([f"`{m}`", *(cell(m, by[(m, i)]) for i in samples), cell(m, mine)]) + " |")
        return lines

    base = methods[0]

    def ratio(m: str, rs: list[dict[str, Any]]) -> str:
        ref = [r for r in rows if r["method"] == base and (r["sample"], r["question_id"]) in
               {(x["sample"], x["question_id"]) for x in rs}]
        return f"{speed(rs) / speed(ref):.2f}x"

    v = machine.versions()
    out = [
        "# Best-of-N: STAND's n-gram module kept across the samples of a prompt",
        "",
        (f"Target `{args.target}` ({args.backend} backend, {args.threads} threads), temperature {args.temperature:g}, "
         f"{args.max_new_tokens} new tokens at most, draft budget {args.draft_length}; {len(chosen)} Spec-Bench "
         f"`{args.task}` prompts ({', '.join(q.question_id for q in chosen)}), {args.samples} samples each, "
         f"sample i seeded {args.seed} + i - 1 for every method; methods interleaved per sample."),
        "",
        "Reproduce: `python benchmarks/best_of_n.py " + " ".join(sys.argv[1:]) + "`",
        "",
        "## Mean accepted tokens per step (tau), by sample index",
        "",
        *table(lambda m, rs: "—" if not any(r["steps"] for r in rs) else f"{tau(rs):.2f}"),
        "",
        f"## Speed relative to `{base}` (mean tokens/s over prompts, prefill included), by sample index",
        "",
        *table(ratio),
        "",
        f"Machine: {machine.machine().get('cpu', '?')}; outpace commit {v.get('outpace commit', '?')}.",
    ]
    return "\n".join(out) + "\n"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", default="qwen2.5-coder-1.5b")
    p.add_argument("--backend", default="llama.cpp", choices=["llama.cpp", "torch"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--methods", default="ar,stand:share=never,stand",
                   help="outpace bench methods; the first is the speed reference (default: %(default)s)")
    p.add_argument("--task", default="math_reasoning", help="Spec-Bench task to take prompts from")
    p.add_argument("--prompts", type=int, default=3)
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--draft-length", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    return p


if __name__ == "__main__":
    raise SystemExit(main())
