"""`outpace bench`: command-line registration. Parsing and printing only; heavy imports
(torch, transformers, matplotlib) happen inside the functions that run a command.

    outpace bench [--target T] [--methods M1,M2,...] [--per-task N] [--out DIR] ...   run / resume
    outpace bench report DIR [--cost-profile FILE]                                    report only
    outpace bench profile [--target T] [--draft D] --out FILE                         cost profile
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from outpace.errors import OutpaceError
from outpace.hardware import resolve_dtype

DEFAULT_METHODS = "ar,draft-model:qwen2.5-coder-0.5b,prompt-lookup,hf-ar,hf-assisted,hf-prompt-lookup,llama-cpp-ar"
DEFAULT_MAX_NEW_TOKENS = 256


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the `bench` command and its `report` and `profile` subcommands."""
    from outpace.cli import add_engine_args, add_sampling_args

    p = sub.add_parser(
        "bench", help="benchmark methods and peers on Spec-Bench or HumanEval prompts",
        description="Run every prompt through every method (interleaved), append one record per turn "
        "to OUT/records.jsonl (a rerun resumes), and write OUT/report.md with plots.",
    )
    add_engine_args(p)
    add_sampling_args(p)
    p.set_defaults(max_new_tokens=DEFAULT_MAX_NEW_TOKENS, run=_run_bench)
    p.add_argument("--methods", default=DEFAULT_METHODS,
                   help="comma-separated: ar, any outpace drafter spec (draft-model:MODEL, prompt-lookup[:k=v,...]), "
                   "a drafter spec ending in @adaptive (that method alone chooses its draft length from measured costs), "
                   f"hf-ar, hf-assisted, hf-prompt-lookup, llama-cpp-ar (default {DEFAULT_METHODS})")
    p.add_argument("--draft", default=None,
                   help="hf-assisted's draft model (default: the first draft-model: method's, else qwen2.5-coder-0.5b)")
    p.add_argument("--per-task", type=int, default=None,
                   help="first N prompts per task (categories round-robin, file order; default all)")
    p.add_argument("--repeats", type=int, default=1, help="passes over all prompts (default 1)")
    p.add_argument("--out", default=None, help="run directory (default bench-out/<target>)")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--suite", default="spec-bench", choices=["spec-bench", "humaneval"])
    source.add_argument("--questions", default=None, help="a JSONL file in Spec-Bench format instead of the suite")
    p.add_argument("--cost-profile", default=None, help="JSON cost profile: adds a projected speedup column")
    p.add_argument("--report-only", action="store_true", help="regenerate OUT/report.md from the records; run nothing")
    _add_report_flags(p)

    bsub = p.add_subparsers(title="bench commands", metavar="{report,profile}")
    r = bsub.add_parser("report", help="regenerate a run's report.md and plots from its records")
    r.add_argument("dir", help="the run directory (--out of the run)")
    r.add_argument("--cost-profile", default=None, help="JSON cost profile for the projected column")
    _add_report_flags(r)
    r.set_defaults(run=_run_report)

    pr = bsub.add_parser("profile", help="measure this machine's verify and draft costs as a cost profile")
    add_engine_args(pr)
    pr.add_argument("--draft", default="qwen2.5-coder-0.5b", help="draft model to time ('none' to skip)")
    pr.add_argument("--out", required=True, help="JSON file to write")
    pr.add_argument("--context", type=int, default=200, help="cached tokens before the timed forward (default 200)")
    pr.add_argument("--repeats", type=int, default=5, help="timings per size; the median is kept (default 5)")
    pr.add_argument("--ks", default="1,2,4,8,16", help="verify sizes to time (default 1,2,4,8,16)")
    pr.set_defaults(run=_run_profile)


def _add_report_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def default_out(target: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(target).name or target).strip("-") or "target"
    return Path("bench-out") / slug


def _draft_for(methods: tuple[str, ...], explicit: str | None) -> str:
    from outpace.bench.config import DEFAULT_DRAFT

    if explicit:
        return explicit
    for m in methods:
        kind, _, arg = m.partition(":")
        model = arg.partition(",")[0]  # draft-model:MODEL[,quant=...]
        if kind == "draft-model" and model:
            return model
    return DEFAULT_DRAFT


def _run_bench(args: argparse.Namespace) -> int:
    from outpace.bench import records, report
    from outpace.bench.config import RunConfig, parse_methods
    from outpace.bench.questions import load_suite, select
    from outpace.cli import sampling_from

    out = Path(args.out) if args.out else default_out(args.target)
    if args.report_only:
        return _report(out, args.cost_profile, args.no_plots)
    sampling_from(args)  # validates the sampling options before anything slow
    if args.per_task is not None and args.per_task <= 0:
        raise OutpaceError(f"--per-task must be a positive integer, got {args.per_task}")
    from outpace.engine import resolve_backend

    methods = parse_methods(args.methods)
    questions, digest = load_suite(args.suite, args.questions)
    config = RunConfig(
        target=args.target, methods=methods, dtype=resolve_dtype(args.dtype),
        backend=resolve_backend(args.backend, args.target, args.quant), quant=args.quant,
        adaptive=args.adaptive, threads=args.threads,
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
        seed=args.seed, draft_length=args.draft_length, repeats=args.repeats, per_task=args.per_task,
        suite=args.suite, questions=args.questions, questions_sha256=digest, draft=_draft_for(methods, args.draft),
    )
    profile = report.load_profile(Path(args.cost_profile)) if args.cost_profile else None
    from outpace.bench.methods import check_methods
    from outpace.bench.run import run_bench

    check_methods(config.methods, config.dtype)
    records.open_run(out, config)
    if profile is not None:
        records.write_json(out / records.PROFILE_FILE, profile.to_json())
    chosen = select(questions, args.per_task)
    print(f"outpace bench: {len(chosen)} prompts x {len(methods)} methods x {args.repeats} repeat(s) into {out}",
          file=sys.stderr)
    run_bench(config, out, chosen, progress=not args.no_progress)
    return _report(out, None, args.no_plots)


def _report(out: Path, cost_profile: str | None, no_plots: bool) -> int:
    from outpace.bench import records, report

    profile = report.load_profile(Path(cost_profile)) if cost_profile else None
    if profile is not None and (out / records.CONFIG_FILE).exists():
        records.write_json(out / records.PROFILE_FILE, profile.to_json())
    path = report.write_report(out, profile, make_plots=not no_plots)
    text = path.read_text(encoding="utf-8")
    start = text.find("## Results")
    print(text[start: text.find("\n## ", start + 1)].strip() if start >= 0 else text)
    print(f"\noutpace bench: report written to {path}", file=sys.stderr)
    return 0


def _run_report(args: argparse.Namespace) -> int:
    return _report(Path(args.dir), args.cost_profile, args.no_plots)


def _run_profile(args: argparse.Namespace) -> int:
    from outpace.backends.torch import set_threads
    from outpace.bench.profile import measure
    from outpace.engine import resolve_backend

    try:
        ks = [int(k) for k in args.ks.split(",") if k.strip()]
    except ValueError:
        raise OutpaceError(f"--ks must be comma-separated integers, got {args.ks!r}") from None
    set_threads(args.threads)
    draft = None if args.draft in ("", "none") else args.draft
    result = measure(args.target, resolve_dtype(args.dtype), draft, ks, args.context, args.repeats, quant=args.quant,
                     backend=resolve_backend(args.backend, args.target, args.quant), say=lambda m: print(f"outpace bench profile: {m}", file=sys.stderr))
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))
    print(f"outpace bench profile: written to {path}", file=sys.stderr)
    return 0
