"""``report.md`` and the plots, computed from a run directory's records alone.

`summarize` turns records into rows (pure); `render` turns rows into markdown (pure);
`write_report` reads the run directory, writes ``report.md`` and the PNGs.
"""

from __future__ import annotations

import json
import shlex
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from outpace.bench import metrics, plots, records
from outpace.bench.config import (
    BASELINE,
    HF_AR,
    MODEL_FREE_KINDS,
    RunConfig,
    is_peer,
    method_kind,
    reference_of,
)
from outpace.bench.costs import CostProfile
from outpace.bench.metrics import Exactness, Spread, TimeSplit
from outpace.bench.questions import TASK_TITLES, task_order
from outpace.bench.records import TurnRecord
from outpace.errors import OutpaceError

REPORT_FILE = "report.md"
PLOT_FILES = {"speedup": "speedup.png", "accepted": "accepted_lengths.png", "time": "time_split.png"}


@dataclass(frozen=True)
class MethodRow:
    """One method's line of the leaderboard."""

    method: str
    turns: int
    new_tokens: int
    task_speedups: dict[str, Spread | None]
    overall: Spread | None
    tokens_per_s: Spread | None
    tau: float | None
    reference: str | None
    exact: Exactness | None
    projected: float | None
    split: TimeSplit | None
    wall_s: float
    draft_ms: float | None = None  # per step, median over turns
    verify_ms: float | None = None
    state: Spread | None = None  # drafter state bytes after each turn
    steal: Spread | None = None  # CPU share stolen by the hypervisor during each turn


def task_speedups(mine: Sequence[TurnRecord], base: Sequence[TurnRecord], tasks: Sequence[str],
                  same_length: bool = False) -> dict[str, Spread | None]:
    """Speedup of `mine` over `base` within each task, on the turns both ran (`same_length`: and
    produced as many tokens in)."""
    return {t: metrics.spread(metrics.speedups([r for r in mine if r.task == t], [r for r in base if r.task == t],
                                               same_length)) for t in tasks}


def summarize(config: RunConfig, recs: Sequence[TurnRecord], profile: CostProfile | None) -> tuple[list[MethodRow], list[str], str]:
    """Rows for the methods that have records, the tasks present, and the baseline method."""
    by_method = metrics.group(recs, lambda r: r.method)
    ran = [m for m in config.methods if m in by_method]
    baseline = config.baseline if config.baseline in by_method else (ran[0] if ran else config.baseline)
    tasks = task_order(r.task for r in recs)
    base = by_method.get(baseline, [])
    rows = []
    for m in ran:
        mine = by_method[m]
        per_task = task_speedups(mine, base, tasks)
        ref = reference_of(m)
        exact = metrics.exactness(mine, by_method[ref]) if ref in by_method and config.greedy else None
        projected = None
        if profile is not None and not is_peer(m):
            projected = metrics.projected_speedup(mine, profile, method_kind(m) not in MODEL_FREE_KINDS and m != "ar")
        rows.append(MethodRow(
            m, len(mine), sum(r.new_tokens for r in mine), per_task, metrics.spread(metrics.speedups(mine, base)),
            metrics.spread(list(metrics.speeds_by_repeat(mine).values())), metrics.tau(mine), ref, exact,
            projected, metrics.time_split(mine), sum(r.wall_s for r in mine),
            metrics.ms_per_step(mine, "draft_s"), metrics.ms_per_step(mine, "verify_s"), metrics.state_bytes(mine),
            metrics.cpu_steal(mine),
        ))
    return rows, tasks, baseline


#: Peers that outpace methods are compared with directly, in this order: the number a CPU user
#: compares against first, then transformers' assisted generation and plain generate.
HEADLINE_PEERS: tuple[str, ...] = ("llama-cpp-ar", "hf-assisted", "hf-ar")


@dataclass(frozen=True)
class PeerComparison:
    """Each outpace method's speedup over one peer, per task and overall (turns both ran)."""

    peer: str
    task_speedups: dict[str, dict[str, Spread | None]]  # method -> task -> speedup
    overall: dict[str, Spread | None]  # method -> speedup
    # The same on the turns where both produced as many tokens (`metrics.equal_length`), and
    # method -> (those turns, turns both ran).
    equal_task_speedups: dict[str, dict[str, Spread | None]] = field(default_factory=dict)
    equal_overall: dict[str, Spread | None] = field(default_factory=dict)
    equal_turns: dict[str, tuple[int, int]] = field(default_factory=dict)


def peer_comparisons(config: RunConfig, recs: Sequence[TurnRecord]) -> list[PeerComparison]:
    """Speedups of every outpace method over each headline peer that has records."""
    by_method = metrics.group(recs, lambda r: r.method)
    tasks = task_order(r.task for r in recs)
    ours = [m for m in config.methods if m in by_method and not is_peer(m)]
    out = []
    for peer in (p for p in HEADLINE_PEERS if p in by_method):
        base = by_method[peer]
        out.append(PeerComparison(
            peer, {m: task_speedups(by_method[m], base, tasks) for m in ours},
            {m: metrics.spread(metrics.speedups(by_method[m], base)) for m in ours},
            {m: task_speedups(by_method[m], base, tasks, same_length=True) for m in ours},
            {m: metrics.spread(metrics.speedups(by_method[m], base, same_length=True)) for m in ours},
            {m: (len(metrics.equal_length(by_method[m], base)[0]), len(metrics.aligned(by_method[m], base)[0]))
             for m in ours}))
    return out


# ---------------------------------------------------------------------------- formatting


def fmt_spread(s: Spread | None, unit: str = "x", digits: int = 2) -> str:
    if s is None:
        return "—"
    if s.n <= 1:
        return f"{s.median:.{digits}f}{unit}"
    return f"{s.median:.{digits}f}{unit} ({s.lo:.{digits}f}–{s.hi:.{digits}f})"


def fmt_exact(row: MethodRow, config: RunConfig, ran: set[str]) -> str:
    if not config.greedy:
        return "n/a (sampling)"
    if row.method in (BASELINE, HF_AR):
        return "reference"
    if row.reference is None:
        return "n/a (no same-engine reference)"
    if row.reference not in ran:
        return f"n/a ({row.reference} not run)"
    e = row.exact
    if e is None:
        return "n/a (no common turns)"
    text = f"{e.matched}/{e.total} ({100 * e.fraction:.0f}%)"
    if e.divergences:
        text += f", first diff at token {statistics.median(e.divergences):.0f} (median)"
    return text


def _table(header: Sequence[str], body: Sequence[Sequence[str]], align: str = "l") -> str:
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join([":---"] + [("---:" if align == "r" else "---")] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def leaderboard(rows: Sequence[MethodRow], tasks: Sequence[str], config: RunConfig, profile: CostProfile | None) -> str:
    """The Spec-Bench leaderboard layout: speedup per task, overall, mean accepted tokens."""
    ran = {r.method for r in rows}
    header = ["Method", *(TASK_TITLES.get(t, t) for t in tasks), "Overall speedup", "Mean accepted tokens",
              "Tokens/s", "Exact (greedy) vs ref"]
    if profile is not None:
        header.append(f"Projected speedup ({profile.name}) †")
    body = []
    for r in rows:
        line = [f"`{r.method}`", *(fmt_spread(r.task_speedups[t]) for t in tasks), fmt_spread(r.overall),
                f"{r.tau:.2f}" if r.tau is not None else "—", fmt_spread(r.tokens_per_s, "", 2), fmt_exact(r, config, ran)]
        if profile is not None:
            line.append(f"{r.projected:.2f}x" if r.projected is not None else "n/a")
        body.append(line)
    return _table(header, body, "r")


def fmt_bytes(n: float) -> str:
    return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"


def fmt_state(s: Spread | None) -> str:
    """Drafter state after a turn: median (max)."""
    return "—" if s is None else f"{fmt_bytes(s.median)} ({fmt_bytes(s.hi)})"


def fmt_steal(s: Spread | None) -> str:
    """CPU steal over a method's turns: median (max) percent."""
    return "—" if s is None else f"{100 * s.median:.0f}% ({100 * s.hi:.0f}%)"


def time_table(rows: Sequence[MethodRow]) -> str:
    """Share of wall time per phase, cost per step, drafter memory and CPU steal, per method
    (outpace methods; peers report only wall time and steal)."""
    with_steal = any(r.steal is not None for r in rows)
    body = []
    for r in rows:
        per_step = [f"{ms:.1f}" if ms is not None else "—" for ms in (r.draft_ms, r.verify_ms)]
        tail = [fmt_state(r.state), *([fmt_steal(r.steal)] if with_steal else [])]
        if r.split is None:
            body.append([f"`{r.method}`", str(r.turns), str(r.new_tokens), *["—"] * 5, f"{r.wall_s:.1f}",
                         *per_step, *tail])
            continue
        sh = r.split.shares()
        body.append([f"`{r.method}`", str(r.turns), str(r.new_tokens),
                     *(f"{100 * sh[p]:.1f}%" for p in ("prefill", "draft", "verify", "other", "untracked")),
                     f"{r.split.wall:.1f}", *per_step, *tail])
    return _table(["Method", "Turns", "New tokens", "Prefill", "Draft", "Verify", "Other", "Untracked", "Wall s",
                   "Draft ms/step", "Verify ms/step", "Drafter state: median (max)",
                   *(["CPU steal: median (max)"] if with_steal else [])], body, "r")


def peer_section(comparisons: Sequence[PeerComparison], tasks: Sequence[str]) -> list[str]:
    """Markdown: the best outpace method against each peer, then the per-task table against the
    first peer with the other peers' overall columns beside it."""
    if not comparisons or not comparisons[0].overall:
        return []
    first, others = comparisons[0], comparisons[1:]
    out = ["## Against the peers", ""]
    for c in comparisons:
        known = {m: s for m, s in c.overall.items() if s is not None}
        if known:
            best = max(known, key=lambda m: known[m].median)
            out.append(f"- Best outpace method against `{c.peer}`: `{best}`, {fmt_spread(known[best])} "
                       f"({_verdict(known[best].median)} `{c.peer}`).")
    header = ["Method", *(TASK_TITLES.get(t, t) for t in tasks), f"Overall vs `{first.peer}`",
              *(f"Overall vs `{c.peer}`" for c in others)]
    body = [[f"`{m}`", *(fmt_spread(first.task_speedups[m][t]) for t in tasks), fmt_spread(s),
             *(fmt_spread(c.overall.get(m)) for c in others)] for m, s in first.overall.items()]
    out += ["", (f"Speedup of each outpace method over the peer (tokens/s as in the table above, on the turns "
                 f"both ran); per task against `{first.peer}`."), "", _table(header, body, "r")]
    if any(same < both for same, both in first.equal_turns.values()):
        header = ["Method", *(TASK_TITLES.get(t, t) for t in tasks), f"Overall vs `{first.peer}`", "Turns"]
        body = [[f"`{m}`", *(fmt_spread(first.equal_task_speedups[m][t]) for t in tasks),
                 fmt_spread(first.equal_overall.get(m)), "{}/{}".format(*first.equal_turns[m])]
                for m in first.overall]
        out += ["", (f"The same on the turns where the method and `{first.peer}` produced as many new tokens. Their "
                     "outputs can diverge (different kernels round differently) and stop at different lengths, and "
                     "tokens/s counts the prefill, so a shorter answer to the same prompt reads as slower; these "
                     "turns compare speed alone."), "", _table(header, body, "r")]
    return out


def economics_section(recs: Sequence[TurnRecord], methods: Sequence[str], baseline: str,
                      tasks: Sequence[str]) -> list[str]:
    """Markdown: each drafting method's decode-phase speedup over `baseline` split into tokens
    per step and the cost of a step, per task and overall (`metrics.step_economics`)."""
    by_method = metrics.group(recs, lambda r: r.method)
    base = by_method.get(baseline, [])
    body = []
    for m in methods:
        if m == baseline or m not in by_method or is_peer(m):
            continue
        cells = [metrics.step_economics([r for r in by_method[m] if r.task == t], [r for r in base if r.task == t])
                 for t in tasks]
        overall = metrics.step_economics(by_method[m], base)
        if overall is not None:
            body.append([f"`{m}`", *(_fmt_economics(c) for c in cells), _fmt_economics(overall)])
    if not body:
        return []
    return ["## Can speculation pay here?", "",
            (f"Decode-phase speedup over `{baseline}` (prefill left out) = tau / step cost: tau is the tokens a "
             f"step commits, the step cost what one step (draft + verify + bookkeeping) takes in units of one "
             f"`{baseline}` step, pooled over the turns both ran. A method gains exactly where its tau exceeds "
             "its step cost. The step cost is the backend's cost curve at work: where verifying k tokens costs "
             "about what one costs (a memory-bound forward) it stays near 1 and every accepted token is "
             "profit; where a forward over several tokens is compute-bound it grows with the tokens verified."),
            "", _table(["Method", *(TASK_TITLES.get(t, t) for t in tasks), "Overall"], body, "r")]


def _fmt_economics(e: metrics.StepEconomics | None) -> str:
    return "—" if e is None else f"{e.decode_speedup:.2f}x ({e.tau:.2f} / {e.step_cost:.2f})"


def _verdict(speedup: float, tolerance: float = 0.05) -> str:
    """Plain words for a speedup; within `tolerance` of 1 is a tie on these noisy machines."""
    if speedup > 1 + tolerance:
        return "faster than"
    if speedup < 1 - tolerance:
        return "slower than"
    return f"within {100 * tolerance:g}% of"


def command_line(config: RunConfig) -> str:
    """An `outpace bench` command that reproduces `config` (the output directory aside)."""
    args = ["outpace", "bench", "--target", config.target, "--methods", ",".join(config.methods),
            "--dtype", config.dtype, "--max-new-tokens", str(config.max_new_tokens),
            "--temperature", f"{config.temperature:g}", "--draft-length", str(config.draft_length),
            "--repeats", str(config.repeats), "--draft", config.draft]
    if config.backend != "torch":
        args += ["--backend", config.backend]
    if config.quant:
        args += ["--quant", config.quant]
    if config.adaptive:
        args.append("--adaptive")
    if config.threads:
        args += ["--threads", str(config.threads)]
    if config.per_task:
        args += ["--per-task", str(config.per_task)]
    if config.suite != "spec-bench":
        args += ["--suite", config.suite]
    if config.questions:
        args += ["--questions", config.questions]
    if not config.greedy:
        args += ["--top-k", str(config.top_k), "--top-p", f"{config.top_p:g}"]
        if config.seed is not None:
            args += ["--seed", str(config.seed)]
    return shlex.join(args)


def skipped_methods(config: RunConfig, recs: Sequence[TurnRecord], sessions: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Methods of the config without records, with the reason the latest session that
    skipped them gave ('not run yet' for those of an interrupted run)."""
    ran = {r.method for r in recs}
    reasons: dict[str, str] = {}
    for s in sessions:
        reasons.update(s.get("skipped", {}))
    return {m: reasons.get(m, "not run yet (the run was interrupted before it; rerun to resume)")
            for m in config.methods if m not in ran}


def render(config: RunConfig, recs: Sequence[TurnRecord], sessions: Sequence[Mapping[str, Any]],
           profile: CostProfile | None, plot_files: Sequence[str], plot_note: str = "") -> str:
    """The whole report as markdown."""
    rows, tasks, baseline = summarize(config, recs, profile)
    engine = config.dtype if config.backend == "torch" else "llama.cpp backend"
    engine += f", {config.quant}" if config.quant else ""
    engine += ", adaptive draft length" if config.adaptive else ""
    out = ["# outpace bench report", "",
           f"Target `{config.target}` ({engine}), {'greedy' if config.greedy else f'temperature {config.temperature:g}'}, "
           f"{config.max_new_tokens} new tokens at most, draft length {config.draft_length}, "
           f"suite {config.questions or config.suite}" + (f", {config.per_task} prompts per task" if config.per_task else "")
           + f", {config.repeats} repeat(s). Speedups are relative to `{baseline}`.", "",
           "Reproduce: `" + command_line(config) + "`", "", "## Results", ""]
    out.append(leaderboard(rows, tasks, config, profile) if rows else "No records yet.")
    out += ["", _notes(config, rows, profile, baseline)]
    peers = peer_section(peer_comparisons(config, recs), tasks)
    if peers:
        out += [""] + peers
    economics = economics_section(recs, config.methods, baseline, tasks)
    if economics:
        out += [""] + economics
    skipped = skipped_methods(config, recs, sessions)
    if skipped:
        out += ["", "## Methods without results", ""] + [f"- `{m}`: {why}" for m, why in skipped.items()]
    out += ["", "## Where the time goes", "", time_table(rows) if rows else "No records yet.", "",
            ("Draft and verify ms/step: medians over turns of each turn's mean. Drafter state: the memory of a "
             "model-free drafter's own tables after each turn (n-gram indexes, matrices, datastores; model "
             "weights and KV caches are not counted), median and max over turns."
             + (" CPU steal: the share of the machine's CPU time that the hypervisor gave to other guests "
                "during each turn (/proc/stat), median and max over the turns that recorded it; on a shared "
                "VM it slows every method and is the main source of timing noise, so compare methods "
                "measured under similar steal." if any(r.steal is not None for r in rows) else "")), ""]
    out += _sessions_section(sessions)
    if plot_files:
        out += ["", "## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plot_files]
    if plot_note:
        out += ["", plot_note]
    return "\n".join(out) + "\n"


def _notes(config: RunConfig, rows: Sequence[MethodRow], profile: CostProfile | None, baseline: str) -> str:
    notes = [
        f"Speedup: mean tokens/s over prompts (a prompt's tokens/s = its new tokens / its wall time, all turns, "
        f"prefill included) divided by `{baseline}`'s, on the turns both ran; "
        + ("median and (min–max) over repeats." if config.repeats > 1 else "one repeat."),
        ("Mean accepted tokens (tau): tokens committed per target forward, sum(accepted + 1) / steps; "
        "— for peers, whose engines do not report steps."),
        ("Exact: turns whose new token ids equal the reference method's (outpace methods vs `ar`, "
        "transformers peers vs `hf-ar`)."),
    ]
    inexact = [r.method for r in rows if r.exact is not None and r.exact.matched < r.exact.total]
    full_precision = config.backend == "torch" and config.dtype == "float32" and not config.quant
    if inexact and not full_precision:
        notes.append(
            f"Inexact turns in reduced precision ({', '.join(inexact)}): a forward over k tokens and k one-token "
            "forwards round differently, so near-tied argmaxes can flip and the outputs diverge from there on. "
            "Run with --dtype float32 (torch, no --quant) to check losslessness; below 100% there is a bug."
        )
    elif inexact:
        notes.append(f"**Inexact turns in float32 ({', '.join(inexact)}): a lossless method should match; this is a bug.**")
    if profile is not None:
        notes.append(
            f"† Projected, not measured: the speedup each outpace method would have if a step cost what the "
            f"profile `{profile.name}` says (verify k tokens: verify_ms[k]; {profile.draft_ms_per_token:g} ms per "
            f"drafted token for model drafters, 0 for prompt lookup; autoregressive step {profile.ar_ms:g} ms), "
            "using each step's measured proposals and acceptances; prefill excluded."
        )
    return "\n".join(f"- {n}" for n in notes)


def _sessions_section(sessions: Sequence[Mapping[str, Any]]) -> list[str]:
    if not sessions:
        return []
    out = ["## Machine and versions", ""]
    for i, s in enumerate(sessions, 1):
        m, v = s.get("machine", {}), s.get("versions", {})
        flags = ", ".join(m.get("cpu_flags", [])) or "none of avx2/avx512"
        out.append(f"- Session {i} ({s.get('started', '?')}): {m.get('cpu', '?')}, {m.get('cores', '?')} cores "
                   f"({flags}), torch threads {m.get('torch_threads', '?')}; "
                   + ", ".join(f"{k} {val}" for k, val in v.items()))
    return out


# ---------------------------------------------------------------------------- files


def load_profile(path: Path) -> CostProfile:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OutpaceError(f"cost profile not found: {path}") from None
    except json.JSONDecodeError as err:
        raise OutpaceError(f"cost profile {path} is not valid JSON: {err}") from None
    return CostProfile.from_json(data)


def write_report(out: Path, profile: CostProfile | None = None, make_plots: bool = True) -> Path:
    """Regenerate ``report.md`` (and the plots) of the run in `out` from its files.

    Without `profile`, uses ``out/cost_profile.json`` when the run saved one."""
    config = records.read_config(out)
    if config is None:
        raise OutpaceError(f"{out} is not a bench run directory (no {records.CONFIG_FILE})")
    if profile is None and (out / records.PROFILE_FILE).exists():
        profile = load_profile(out / records.PROFILE_FILE)
    recs = records.read_records(out)
    sessions = records.read_sessions(out)
    files, note = [], ""
    if make_plots and recs:
        if plots.available():
            files = _plots(out, config, recs, profile)
        else:
            note = f"Plots not made: {plots.MATPLOTLIB_MISSING}."
    path = out / REPORT_FILE
    path.write_text(render(config, recs, sessions, profile, files, note), encoding="utf-8")
    return path


def _plots(out: Path, config: RunConfig, recs: Sequence[TurnRecord], profile: CostProfile | None) -> list[str]:
    rows, tasks, _ = summarize(config, recs, profile)
    columns = [TASK_TITLES.get(t, t) for t in tasks] + ["Overall"]
    speedups = {r.method: {**{TASK_TITLES.get(t, t): r.task_speedups[t] for t in tasks}, "Overall": r.overall}
                for r in rows}
    plots.speedup_plot(speedups, columns, out / PLOT_FILES["speedup"])
    by_method = metrics.group(recs, lambda r: r.method)
    drafting = [r for r in rows if r.tau is not None and any(p for rec in by_method[r.method] for p in rec.proposed_lengths or ())]
    hist = {r.method: dict(metrics.accepted_histogram(by_method[r.method])) for r in drafting}
    plots.accepted_plot(hist, out / PLOT_FILES["accepted"])
    plots.time_split_plot({r.method: r.split for r in rows if r.split is not None}, out / PLOT_FILES["time"])
    return list(PLOT_FILES.values())
