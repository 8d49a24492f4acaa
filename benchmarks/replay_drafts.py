"""Replay a benchmark run's greedy `ar` outputs through the model-free drafters, without a model.

Under greedy decoding the target's output is known: it is what `ar` generated. So for any draft
proposed after any prefix of that output, the nodes greedy verification would accept follow from
the record alone. This script runs the library's own drafters and `AdaptiveDraftLength` through
the decode loop with the target replaced by the record, and prints for each drafter:

- how often a first draft node is accepted, per grade (`Draft.grades`: for the n-gram drafters
  the context tokens matched behind the node), which is the evidence the graded budget uses;
- tau (tokens per step) and the decode-phase speedup over `ar` each budget would have if a
  forward over k tokens cost what `--costs` says, in units of one single-token forward:
  the fixed budget, the position-based cost-aware budget (`AdaptiveDraftLength` without grades)
  and the graded one (with grades pooled over the run's turns, as one `Decoder` does).

These are projections, not measurements (prefill, drafting time and noise are left out); the
speed of a method is what `outpace bench` measures. Usage:

    python benchmarks/replay_drafts.py benchmarks/results/default-10p-256t
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from outpace.bench.questions import load_suite
from outpace.bench.records import read_config, read_records
from outpace.bench.run import prompt_ids
from outpace.datastore import load_tokenizer
from outpace.decoder import GRADE_MEMORY, encode_prompt
from outpace.drafters.base import DraftContext, Drafter
from outpace.drafters.prompt_lookup import PromptLookupDrafter
from outpace.drafters.rest import ContextRetriever, RestDrafter
from outpace.policies import AdaptiveDraftLength, CostModel, GradeCounts
from outpace.sampling import SamplingConfig
from outpace.tree import children
from outpace.types import Draft

GREEDY = SamplingConfig()
# Fitted by least squares to the default run's per-turn verify times (llama.cpp, Q4_K_M, 2
# threads): a forward over 2, 4, 5 tokens costs 1.6, 2.66, 2.76 single-token forwards.
DEFAULT_COSTS = "1:1,2:1.6,4:2.66,5:2.76"
DRAFTERS: dict[str, Callable[[], Drafter]] = {
    "prompt-lookup": PromptLookupDrafter,
    "rest": lambda: RestDrafter(ContextRetriever(16)),
}


def accepted_path(draft: Draft, output: Sequence[int]) -> list[int]:
    """The nodes greedy verification accepts when the target's next tokens are `output`."""
    kids, path, at = children(draft.parents), [], 0  # kids[0]: the root's children
    for token in output:
        nxt = [v for v in kids[at] if int(draft.tokens[v]) == token]
        if not nxt:
            break
        path.append(nxt[0])
        at = nxt[0] + 1
    return path


class Tally:
    """Tokens and cost of the steps of one budget, per task; first-node acceptance per grade."""

    def __init__(self) -> None:
        self.turns: dict[str, int] = defaultdict(int)
        self.tokens: dict[str, float] = defaultdict(float)
        self.cost: dict[str, float] = defaultdict(float)
        self.steps: dict[str, int] = defaultdict(int)
        self.first: dict[int, list[int]] = defaultdict(lambda: [0, 0])  # grade -> [proposed, accepted]

    def step(self, task: str, committed: int, cost: float) -> None:
        self.tokens[task] += committed
        self.cost[task] += cost
        self.steps[task] += 1

    def speedup(self, task: str | None = None) -> float:
        """Over `ar`, whose turns cost a forward per token but the first (taken from the prefill)."""
        keys = [task] if task else list(self.tokens)
        return sum(self.tokens[k] - self.turns[k] for k in keys) / sum(self.cost[k] for k in keys)

    def tau(self, task: str | None = None) -> float:
        keys = [task] if task else list(self.tokens)
        return sum(self.tokens[k] for k in keys) / sum(self.steps[k] for k in keys)


def replay_turn(drafter: Drafter, policy: AdaptiveDraftLength | None, prompt: list[int], output: list[int],
                max_k: int, costs: CostModel, tally: Tally, task: str) -> None:
    """The decode loop of one turn with the target replaced by its recorded greedy output."""
    drafter.start(prompt)
    tally.turns[task] += 1
    tokens, t, unit = list(prompt), 0, costs.verify(1)
    while t < len(output):
        after_prefill = t == 0  # as in the decoder: the first step forwards only its draft
        budget = min(max_k if policy is None else policy.budget(after_prefill), len(output) - t - 1)
        draft = Draft.empty()
        if budget > 0:
            draft = drafter.propose(DraftContext(tokens, budget, GREEDY, torch.Generator()))
        proposed = draft
        if policy is not None:
            draft = policy.select(draft, after_prefill)
        path = accepted_path(draft, output[t:])
        if draft.grades is not None:
            for v in range(len(draft)):
                if int(draft.parents[v]) < 0:
                    counts = tally.first[int(draft.grades[v])]
                    counts[0] += 1
                    counts[1] += v in path
        if policy is not None:
            policy.observe(draft, path)
            if len(proposed) and not len(draft):
                policy.observe_unverified(proposed, output[t])
        n = len(path) + 1
        forwarded = len(draft) + (not after_prefill)
        tally.step(task, n, costs.verify(forwarded) / unit if forwarded else 0.0)
        tokens += output[t : t + n]
        t += n


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path, help="a bench run directory with greedy `ar` records")
    ap.add_argument("--drafters", default="prompt-lookup,rest", help=f"of {', '.join(DRAFTERS)}")
    ap.add_argument("--draft-length", type=int, default=4)
    ap.add_argument("--costs", default=DEFAULT_COSTS, help=f"k:cost of a forward over k tokens (default {DEFAULT_COSTS})")
    ap.add_argument("--probe-every", type=int, default=AdaptiveDraftLength.probe_every,
                    help="idle steps between probes of the cost-aware budgets (default %(default)s)")
    args = ap.parse_args(argv)
    config = read_config(args.run)
    if config is None:
        sys.exit(f"{args.run} has no config.json: not a bench run")
    costs = CostModel({int(k): float(c) for k, c in (kv.split(":") for kv in args.costs.split(","))}, decay=1.0)
    tokenizer = load_tokenizer(config.target)
    questions = {q.question_id: q for q in load_suite(config.suite, config.questions)[0]}
    ar = {(r.question_id, r.turn): r for r in read_records(args.run) if r.method == "ar" and r.repeat == 0}

    class Encoder:  # what `prompt_ids` needs of a decoder
        def encode(self, prompt: object, chat: bool | None = None) -> list[int]:
            return encode_prompt(tokenizer, prompt, chat)  # type: ignore[arg-type]

    for name in args.drafters.split(","):
        tallies = {b: Tally() for b in ("fixed", "adaptive", "graded")}
        pooled = GradeCounts(memory=GRADE_MEMORY)
        for (qid, turn), rec in sorted(ar.items()):
            q = questions[qid]
            answers = {t: ar[(qid, t)].text for t in range(1, turn)}
            prompt = prompt_ids(Encoder(), q, turn, answers)
            for budget, tally in tallies.items():
                policy = None if budget == "fixed" else AdaptiveDraftLength(
                    costs, args.draft_length, probe_every=args.probe_every,
                    pooled=pooled if budget == "graded" else None)
                replay_turn(DRAFTERS[name](), policy, prompt, list(rec.tokens), args.draft_length, costs, tally, q.task)
        tasks = list(tallies["fixed"].tokens)
        print(f"\n## {name} (draft length {args.draft_length}, costs {args.costs})\n")
        print("| Budget | " + " | ".join(tasks) + " | Overall |")
        print("|:---|" + "---:|" * (len(tasks) + 1))
        for budget, tally in tallies.items():
            cells = [f"{tally.speedup(t):.2f}x ({tally.tau(t):.2f})" for t in tasks]
            print(f"| {budget} | " + " | ".join(cells) + f" | {tally.speedup():.2f}x ({tally.tau():.2f}) |")
        print("\nFirst draft node accepted, by grade (fixed budget): "
              + ", ".join(f"{g}: {a / p:.0%} of {p}" for g, (p, a) in sorted(tallies["fixed"].first.items())))


if __name__ == "__main__":
    main()
