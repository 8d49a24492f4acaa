"""One benchmark record per generated turn, and the run directory that holds them.

Layout of a run directory ``OUT``:

- ``config.json``   the `RunConfig`; a resumed run must match it.
- ``records.jsonl`` one `TurnRecord` per line, appended (and flushed) as each turn completes.
- ``sessions.json`` one entry per invocation: start time, machine, library versions, skipped
  methods with their reasons.
- ``cost_profile.json`` (optional) the cost profile the report projects with.
- ``report.md`` and ``*.png``: regenerated from the above by ``outpace bench report OUT``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any, Self

from outpace.bench.config import RunConfig
from outpace.errors import OutpaceError

RecordKey = tuple[str, str, int, int]  # (method, question_id, turn, repeat)

CONFIG_FILE = "config.json"
RECORDS_FILE = "records.jsonl"
SESSIONS_FILE = "sessions.json"
PROFILE_FILE = "cost_profile.json"


@dataclass(frozen=True)
class Generation:
    """One generation call's output and accounting, as a method returns it (the step fields
    are None for peers, whose engines do not report steps)."""

    tokens: tuple[int, ...]
    text: str
    finish_reason: str
    wall_s: float
    steps: int | None = None
    accepted_lengths: tuple[int, ...] | None = None
    proposed_lengths: tuple[int, ...] | None = None
    proposed_exact: bool | None = None
    prefill_s: float | None = None
    draft_s: float | None = None
    verify_s: float | None = None
    other_s: float | None = None
    drafter_state_bytes: int | None = None  # the drafter's tables after the turn (model-free drafters)


@dataclass(frozen=True, kw_only=True)
class TurnRecord(Generation):
    """What one method did on one turn of one prompt.

    Outpace methods fill every field; peers fill what their engine reports and leave the step
    accounting (``steps`` ... ``other_s``) as None. Times are wall-clock seconds; ``wall_s`` is
    measured the same way for every method (around the whole generation call, prefill
    included). ``tokens`` are the new token ids (without the eos token).
    ``proposed_lengths`` are the draft tokens verified per step; when ``proposed_exact`` is
    False they were reconstructed from per-depth counts (exact for chains; the multiset, not
    the per-step order).
    """

    method: str
    question_id: str
    task: str
    category: str
    turn: int
    repeat: int
    prompt_tokens: int
    new_tokens: int
    cpu_steal: float | None = None  # share of the CPU the hypervisor took during the turn (Linux)

    def __post_init__(self) -> None:
        if self.turn < 1 or self.repeat < 0 or self.new_tokens < 0 or self.wall_s < 0:
            raise OutpaceError(f"invalid record {self.key}: turn < 1, or negative repeat, token count or time")
        if self.new_tokens != len(self.tokens):
            raise OutpaceError(f"invalid record {self.key}: new_tokens {self.new_tokens} != {len(self.tokens)} ids")

    @property
    def key(self) -> RecordKey:
        return (self.method, self.question_id, self.turn, self.repeat)

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def has_steps(self) -> bool:
        return self.accepted_lengths is not None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["tokens_per_s"] = round(self.tokens_per_s, 4)
        for name in ("tokens", "accepted_lengths", "proposed_lengths"):
            if data[name] is not None:
                data[name] = list(data[name])
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TurnRecord:
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        missing = sorted(f.name for f in fields(cls) if f.default is MISSING and f.name not in values)
        if missing:
            raise OutpaceError(f"record lacks field(s) {missing}: {dict(data)!r:.200}")
        values["question_id"] = str(values["question_id"])
        for name in ("tokens", "accepted_lengths", "proposed_lengths"):
            if values.get(name) is not None:
                values[name] = tuple(int(t) for t in values[name])
        return cls(**values)


# ---------------------------------------------------------------------------- files


def read_records(out: Path) -> list[TurnRecord]:
    """All records of a run, in file order. A torn last line (interrupted write) is ignored."""
    path = out / RECORDS_FILE
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    records: list[TurnRecord] = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(TurnRecord.from_json(json.loads(line)))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise OutpaceError(f"{path}:{i + 1} is not valid JSON; the records file is damaged") from None
    return records


def repair_tail(out: Path) -> None:
    """Drop a torn last line (no trailing newline) left by an interrupted write, so appends
    start on a fresh line."""
    path = out / RECORDS_FILE
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
        with open(path, "r+b") as f:
            f.truncate(keep)


class RecordWriter:
    """Appends records to ``records.jsonl``, one flushed line each, so an interrupted run
    loses at most the turn in progress."""

    def __init__(self, out: Path) -> None:
        self._file = open(out / RECORDS_FILE, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write(self, record: TurnRecord) -> None:
        self._file.write(json.dumps(record.to_json(), ensure_ascii=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_config(out: Path) -> RunConfig | None:
    path = out / CONFIG_FILE
    if not path.exists():
        return None
    try:
        return RunConfig.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, TypeError) as err:
        raise OutpaceError(f"{path} is not a valid bench config: {err}") from None


def open_run(out: Path, config: RunConfig) -> None:
    """Create the run directory with `config`, or check that an existing one has the same
    config (raising OutpaceError with the differences otherwise)."""
    existing = read_config(out)
    if existing is not None:
        diff = existing.differences(config)
        if diff:
            raise OutpaceError(
                f"{out} holds a run with a different configuration; it cannot be resumed with this one:\n  "
                + "\n  ".join(diff)
                + "\nuse another --out directory, or repeat the original options"
            )
        return
    if out.exists() and (out / RECORDS_FILE).exists():
        raise OutpaceError(f"{out} has records but no {CONFIG_FILE}; use another --out directory")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / CONFIG_FILE, config.to_json())


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (a temporary file, then a rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_sessions(out: Path) -> list[dict[str, Any]]:
    path = out / SESSIONS_FILE
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        raise OutpaceError(f"{path} is not valid JSON") from None
    return list(data) if isinstance(data, list) else []


def add_session(out: Path, session: Mapping[str, Any]) -> None:
    write_json(out / SESSIONS_FILE, [*read_sessions(out), dict(session)])


def done_keys(records: Iterable[TurnRecord]) -> set[RecordKey]:
    return {r.key for r in records}
