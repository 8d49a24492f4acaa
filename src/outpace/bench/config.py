"""What a benchmark run is: the methods it compares and the settings every method shares.

A method name is either one of the *peers* (other engines run in the same process on the same
model object or file: ``hf-ar``, ``hf-assisted``, ``hf-prompt-lookup``, ``llama-cpp-ar``) or an
outpace drafter spec as understood by ``outpace.engine.make_drafter`` (``ar`` is outpace with no
drafter). New drafters therefore become benchmark methods without any change here.

``RunConfig`` is stored in ``OUT/config.json``; a resumed run must have the same one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from outpace.errors import OutpaceError

BASELINE = "ar"
HF_AR = "hf-ar"
PEERS: tuple[str, ...] = ("hf-ar", "hf-assisted", "hf-prompt-lookup", "llama-cpp-ar")
SUITES: tuple[str, ...] = ("spec-bench", "humaneval")
DTYPES: tuple[str, ...] = ("bfloat16", "float32", "float16")
BACKENDS: tuple[str, ...] = ("torch", "llama.cpp")
DEFAULT_DRAFT = "qwen2.5-coder-0.5b"
#: Drafter kinds that run no model: the projection charges them no per-token draft cost (any
#: other kind, including ones added later, is charged draft_ms_per_token per drafted token).
MODEL_FREE_KINDS: frozenset[str] = frozenset({"prompt-lookup", "recycling", "aded", "stand", "rest", "rasd"})


def is_peer(method: str) -> bool:
    """True for the methods that are other engines, not outpace drafters."""
    return method in PEERS


#: Method suffix: the same drafter with the cost-aware draft length (`outpace.policies`), so
#: one run can hold ``prompt-lookup`` and ``prompt-lookup@adaptive`` side by side.
ADAPTIVE_SUFFIX = "@adaptive"


def is_adaptive(method: str) -> bool:
    return method.endswith(ADAPTIVE_SUFFIX)


def drafter_spec(method: str) -> str:
    """The outpace drafter spec of an outpace method (``ar`` means no drafter)."""
    if is_peer(method):
        raise ValueError(f"{method} is a peer, not an outpace drafter")
    base = method.removesuffix(ADAPTIVE_SUFFIX)
    if base == BASELINE and base != method:
        raise OutpaceError("'ar@adaptive' has no drafter to adapt; use ar")
    return "none" if base == BASELINE else base


def method_kind(method: str) -> str:
    """The drafter kind (``draft-model``, ``prompt-lookup``, ...), or the peer/baseline name."""
    return method.removesuffix(ADAPTIVE_SUFFIX).partition(":")[0]


def reference_of(method: str) -> str | None:
    """The method whose greedy output `method` must reproduce token for token, if any.

    Outpace methods are compared with outpace ``ar`` (same engine, same forward path); the
    transformers peers with ``hf-ar``. The references themselves and ``llama-cpp-ar`` (no
    speculative llama.cpp method here) have none.
    """
    if method in (BASELINE, HF_AR, "llama-cpp-ar"):
        return None
    if method.startswith("hf-"):
        return HF_AR
    return BASELINE


def parse_methods(text: str) -> tuple[str, ...]:
    """Split a ``--methods`` list. Commas separate methods, except that an item of the form
    ``key=value`` continues the options of the method before it, so
    ``ar,prompt-lookup:max_ngram=4,branches=2`` is two methods."""
    methods: list[str] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        if "=" in item and ":" not in item:
            if not methods or ":" not in methods[-1]:
                raise OutpaceError(f"method option {item!r} follows no method with options (METHOD:key=value)")
            methods[-1] += "," + item
        else:
            methods.append(item)
    if not methods:
        raise OutpaceError("--methods is empty; e.g. --methods ar,prompt-lookup,hf-ar")
    duplicates = sorted({m for m in methods if methods.count(m) > 1})
    if duplicates:
        raise OutpaceError(f"method(s) listed twice: {', '.join(duplicates)}")
    return tuple(methods)


def _check_positive(name: str, value: Any, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise OutpaceError(f"{name} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides what a run measures (and must not change when it resumes).

    questions:        a Spec-Bench-format JSONL path, or None for the suite's packaged prompts.
    questions_sha256: digest of the question file's bytes, so a resume notices edited prompts.
    per_task:         first N prompts per task (see `outpace.bench.questions.select`); None = all.
    draft:            the draft model of ``hf-assisted``.
    backend, quant:   how outpace methods run the target (``outpace.engine.EngineSpec``); the
                      transformers peers always use the torch model at `dtype`.
    adaptive:         outpace methods choose each step's draft length (``--adaptive``).
    """

    target: str
    methods: tuple[str, ...]
    dtype: str = "bfloat16"
    backend: str = "torch"
    quant: str | None = None
    adaptive: bool = False
    threads: int | None = None
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    draft_length: int = 4
    repeats: int = 1
    per_task: int | None = None
    suite: str = "spec-bench"
    questions: str | None = None
    questions_sha256: str = ""
    draft: str = DEFAULT_DRAFT

    def __post_init__(self) -> None:
        if not self.target:
            raise OutpaceError("--target is empty")
        if not self.methods or not isinstance(self.methods, tuple):
            raise OutpaceError("a run needs at least one method (a tuple of names)")
        if len(set(self.methods)) != len(self.methods):
            raise OutpaceError(f"methods must be distinct, got {', '.join(self.methods)}")
        if self.dtype not in DTYPES:
            raise OutpaceError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.backend not in BACKENDS:
            raise OutpaceError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.suite not in SUITES:
            raise OutpaceError(f"unknown suite {self.suite!r}; known: {', '.join(SUITES)}")
        if self.questions is not None and self.suite != "spec-bench":
            raise OutpaceError("--questions replaces the Spec-Bench prompts; it cannot be combined with --suite humaneval")
        _check_positive("threads", self.threads, allow_none=True)
        _check_positive("max_new_tokens", self.max_new_tokens)
        _check_positive("repeats", self.repeats)
        _check_positive("--per-task", self.per_task, allow_none=True)
        if not isinstance(self.draft_length, int) or self.draft_length < 1:
            raise OutpaceError(f"draft_length must be an integer >= 1, got {self.draft_length!r}")
        if not isinstance(self.temperature, (int, float)) or not math.isfinite(self.temperature) or self.temperature < 0:
            raise OutpaceError(f"temperature must be a finite number >= 0, got {self.temperature!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def baseline(self) -> str:
        """The method speedups are relative to: ``ar`` when present, else the first method."""
        return BASELINE if BASELINE in self.methods else self.methods[0]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["methods"] = list(self.methods)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise OutpaceError(f"config.json has unknown fields {unknown}; was it written by a newer outpace?")
        values = dict(data)
        values["methods"] = tuple(values.get("methods", ()))
        return cls(**values)

    def differences(self, other: RunConfig) -> list[str]:
        """Human-readable ``field: ours != theirs`` lines for every field that differs."""
        mine, theirs = self.to_json(), other.to_json()
        return [f"{k}: {mine[k]!r} != {theirs[k]!r}" for k in mine if mine[k] != theirs[k]]
