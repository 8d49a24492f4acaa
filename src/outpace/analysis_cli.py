"""`outpace analyze acceptance`: command-line registration. Parsing and printing only; numpy,
torch and the models are imported inside the function that runs the command.

    outpace analyze acceptance --input FILE.npz|FILE.json [--k 2,4] [--scheme with,without]
    outpace analyze acceptance --target MODEL --draft MODEL --prompts N [--tokens M] [--k ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from outpace.errors import OutpaceError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the `analyze` command and its `acceptance` subcommand."""
    p = sub.add_parser("analyze", help="analyses of speculative decoding (optimal multi-draft acceptance)")
    asub = p.add_subparsers(title="analyze commands", metavar="{acceptance}")
    a = asub.add_parser(
        "acceptance",
        help="optimal multi-draft acceptance vs what SpecInfer, SpecTr and Recursive SD reach",
        description="For each draft scheme (i.i.d. / without replacement) and number of drafts k: "
        "the optimal acceptance through the dual of the optimal-transport problem (Hu et al. 2025) "
        "and the acceptance of each implemented lossless verifier, averaged over positions.",
    )
    src = a.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", help="a .npz or .json with arrays p and q (probabilities, [n, vocab] or "
                     "[vocab]) or p_logits and q_logits (processed with the sampling options)")
    src.add_argument("--target", help="target model (with --draft): positions of its own continuations "
                     "of Spec-Bench prompts")
    a.add_argument("--draft", help="draft model, with --target")
    a.add_argument("--prompts", type=int, default=2, help="Spec-Bench prompts (default 2)")
    a.add_argument("--tokens", type=int, default=8, help="continuation tokens per prompt (default 8)")
    a.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    a.add_argument("--k", default="2,4", help="numbers of drafts, comma-separated (default 2,4)")
    a.add_argument("--scheme", default="with,without",
                   help="draft schemes: with (i.i.d.), without (replacement); default both")
    a.add_argument("--temperature", type=float, default=1.0)
    a.add_argument("--top-p", type=float, default=1.0)
    a.add_argument("--top-k", type=int, default=0)
    a.add_argument("--samples", type=int, default=2000,
                   help="Monte Carlo draws per position where a verifier is not computed exactly")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--check-lp", action="store_true",
                   help="also solve the primal LP (scipy) where the vocabulary is small and report "
                   "the largest difference from the dual")
    a.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    a.set_defaults(run=_run_acceptance)


def _ints(text: str, flag: str) -> list[int]:
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise OutpaceError(f"{flag} must be comma-separated integers, got {text!r}") from None
    if not out or min(out) < 1:
        raise OutpaceError(f"{flag} needs integers >= 1, got {text!r}")
    return out


def _run_acceptance(args: argparse.Namespace) -> int:
    from outpace.analysis.acceptance import (
        acceptance_table,
        format_table,
        load_arrays,
        model_pair,
        rows_json,
    )
    from outpace.analysis.optimal import SCHEMES, optimal_acceptance, primal_lp
    from outpace.sampling import SamplingConfig

    ks = _ints(args.k, "--k")
    schemes = [s.strip() for s in args.scheme.split(",") if s.strip()]
    if not schemes or any(s not in SCHEMES for s in schemes):
        raise OutpaceError(f"--scheme takes {', '.join(SCHEMES)} (comma-separated), got {args.scheme!r}")
    if args.samples < 1 or args.prompts < 1 or args.tokens < 1:
        raise OutpaceError("--samples, --prompts and --tokens must be >= 1")
    sampling = SamplingConfig(args.temperature, args.top_k, args.top_p, args.seed)
    if args.input:
        p, q = load_arrays(Path(args.input), sampling)
        source = args.input
    else:
        if not args.draft:
            raise OutpaceError("--target needs --draft (the draft model whose acceptance is analysed)")
        print(f"outpace analyze: {args.target} vs {args.draft} on {args.prompts} Spec-Bench prompts ...",
              file=sys.stderr)
        p, q = model_pair(args.target, args.draft, args.prompts, args.tokens, sampling, args.dtype)
        source = f"{args.target} / {args.draft}, {args.prompts} prompts x {args.tokens} tokens"
    rows = acceptance_table(p, q, ks, schemes, args.samples, args.seed)
    lp_diff = None
    if args.check_lp:
        small = [(pi, qi) for pi, qi in zip(p, q) if int((qi > 0).sum()) <= 8]
        lp_diff = max((abs(primal_lp(pi, qi, k, s) - optimal_acceptance(pi, qi, k, s).value)
                       for pi, qi in small for k in ks for s in schemes if k <= 4), default=None)
    if args.json:
        print(json.dumps({"source": source, "positions": int(p.shape[0]), "rows": rows_json(rows),
                          "lp_max_difference": lp_diff}))
        return 0
    print(f"Acceptance at one tree level over {p.shape[0]} positions ({source}; temperature "
          f"{args.temperature}, top-p {args.top_p}, top-k {args.top_k})\n")
    print(format_table(rows))
    if args.check_lp:
        print("\nprimal LP vs dual: " + ("no position with <= 8 draft tokens" if lp_diff is None
                                         else f"largest difference {lp_diff:.2e}"))
    return 0
