"""Running a benchmark: plan the pending turns, load the methods, generate, append records.

Order: repeats, then prompts (tasks taking turns, see `outpace.bench.questions.select`), then
methods, so every method sees each prompt at nearly the same time and machine drift hits all
alike. The method order of each prompt is a row of a Williams design (a balanced Latin square):
over a cycle of rows every method runs in every position equally often and right after every
other method equally often. A plain rotation would not do: it keeps each method's predecessor,
so one method (``ar`` in the default run) would always follow the transformers peers and pay
the switch between engines. A method runs all turns of a prompt in a row: MT-bench's second turn is
conditioned on the method's own first answer (messages = user 1, its answer, user 2), as in
Spec-Bench. Each method generates once before measuring (warm-up, not recorded).

Resuming: every (method, prompt, turn, repeat) already in ``records.jsonl`` is skipped; the
first-turn answer of a half-done prompt is taken from its record.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from outpace.bench import machine, records
from outpace.bench.config import RunConfig
from outpace.bench.questions import Question
from outpace.bench.records import Generation, RecordKey, TurnRecord

WARMUP_TOKENS = 16


@dataclass(frozen=True)
class Unit:
    """One method on one prompt in one repeat: the turns still to generate, in order."""

    method: str
    question: Question
    repeat: int
    turns: tuple[int, ...]  # 1-based


def plan(config: RunConfig, questions: Sequence[Question], done: set[RecordKey]) -> list[Unit]:
    """The pending work in run order (see the module docstring)."""
    units: list[Unit] = []
    rows = balanced_orders(len(config.methods))
    for repeat in range(config.repeats):
        for i, q in enumerate(questions):
            for method in (config.methods[j] for j in rows[i % len(rows)]):
                turns = tuple(t for t in range(1, len(q.turns) + 1) if (method, q.question_id, t, repeat) not in done)
                if turns:
                    units.append(Unit(method, q, repeat, turns))
    return units


def balanced_orders(m: int) -> list[list[int]]:
    """Williams design for m methods: rows of a Latin square in which every ordered pair (a, b),
    a != b, is adjacent (b right after a) equally often: once over the m rows for even m, twice
    over 2m rows (each row and its reverse) for odd m. Row 0 is 0, 1, m-1, 2, m-2, ...; row r
    adds r modulo m (Williams 1949, "Experimental designs balanced for the estimation of
    residual effects of treatments")."""
    base, lo, hi = [0], 1, m - 1
    while lo <= hi:
        base.append(lo)
        lo += 1
        if lo <= hi:
            base.append(hi)
            hi -= 1
    rows = [[(x + r) % m for x in base] for r in range(m)]
    return rows if m % 2 == 0 else rows + [row[::-1] for row in rows]


def messages_for(q: Question, turn: int, answers: dict[int, str]) -> list[dict[str, str]]:
    """Chat messages of a turn: earlier user turns, each followed by the method's answer."""
    msgs: list[dict[str, str]] = []
    for t in range(1, turn):
        msgs += [{"role": "user", "content": q.turns[t - 1]}, {"role": "assistant", "content": answers[t]}]
    msgs.append({"role": "user", "content": q.turns[turn - 1]})
    return msgs


def prompt_ids(encoder: Any, q: Question, turn: int, answers: dict[int, str]) -> list[int]:
    """Token ids of a turn's prompt, from the target's tokenizer (the same for every method)."""
    if not q.chat:
        return list(encoder.encode(q.turns[0], chat=False))
    return list(encoder.encode(messages_for(q, turn, answers)))


def make_record(unit: Unit, turn: int, prompt_len: int, g: Generation, cpu_steal: float | None = None) -> TurnRecord:
    q = unit.question
    return TurnRecord(
        **{f.name: getattr(g, f.name) for f in fields(Generation)},
        method=unit.method, question_id=q.question_id, task=q.task, category=q.category, turn=turn,
        repeat=unit.repeat, prompt_tokens=prompt_len, new_tokens=len(g.tokens), cpu_steal=cpu_steal,
    )


def run_bench(config: RunConfig, out: Path, questions: Sequence[Question], progress: bool = True) -> dict[str, str]:
    """Run (or resume) the benchmark into `out`; returns the skipped methods with reasons.

    `out` must have been opened with `records.open_run(out, config)`.
    """
    from tqdm import tqdm  # type: ignore[import-untyped]

    from outpace.backends.torch import set_threads
    from outpace.bench.methods import Settings, build_methods, check_methods

    def say(msg: str) -> None:
        tqdm.write(f"outpace bench: {msg}", file=sys.stderr)

    records.repair_tail(out)
    existing = records.read_records(out)
    units = plan(config, questions, records.done_keys(existing))
    if not units:
        say("every turn is already recorded; nothing to run")
        return _last_skipped(out)
    names = [m for m in config.methods if any(u.method == m for u in units)]
    check_methods(names, config.dtype)
    set_threads(config.threads)
    methods, skipped, encoder = build_methods(config, names, say)
    records.add_session(out, {"started": machine.now(), "machine": machine.machine(),
                              "versions": machine.versions(), "skipped": skipped})
    units = [u for u in units if u.method in methods]
    answers = {(r.method, r.question_id, r.repeat, r.turn): r.text for r in existing}
    settings = Settings.from_config(config)
    _warm_up(methods, units, encoder, Settings.from_config(config, min(WARMUP_TOKENS, config.max_new_tokens)), say)
    total = sum(len(u.turns) for u in units)
    with records.RecordWriter(out) as writer, tqdm(total=total, unit="turn", desc="bench", file=sys.stderr,
                                                   disable=not progress, dynamic_ncols=True) as bar:
        for unit in units:
            own = {t: answers[(unit.method, unit.question.question_id, unit.repeat, t)]
                   for t in range(1, min(unit.turns))}
            for turn in unit.turns:
                ids = prompt_ids(encoder, unit.question, turn, own)
                before = machine.cpu_times()
                g = methods[unit.method].generate(ids, settings)
                steal = machine.steal_share(before, machine.cpu_times())
                writer.write(make_record(unit, turn, len(ids), g, steal))
                own[turn] = g.text
                bar.set_postfix_str(f"{unit.method} {len(g.tokens) / g.wall_s if g.wall_s else 0:.1f} tok/s"
                                    + (f", CPU steal {100 * steal:.0f}%" if steal is not None else ""))
                bar.update(1)
    return skipped


def _warm_up(methods: dict[str, Any], units: Sequence[Unit], encoder: Any, settings: Any,
             say: Callable[[str], None]) -> None:
    """One short unrecorded generation per method, on the first pending prompt."""
    if not units:
        return
    ids = prompt_ids(encoder, units[0].question, 1, {})
    say(f"warming up {len(methods)} method(s) ...")
    for method in methods.values():
        method.generate(ids, settings)


def _last_skipped(out: Path) -> dict[str, str]:
    sessions = records.read_sessions(out)
    return dict(sessions[-1].get("skipped", {})) if sessions else {}
