"""The methods a benchmark compares, behind one interface: token ids in, `Generation` out.

- outpace methods: `outpace.engine.build` with the method's drafter spec (``ar`` = none).
- ``hf-ar``, ``hf-assisted``, ``hf-prompt-lookup``: transformers ``generate`` on the very model
  object outpace loaded as the target (same weights, same dtype), greedy unless sampling.
- ``llama-cpp-ar``: llama-cpp-python on the target's own GGUF file.

Every method gets the same prompt token ids (the outpace/transformers tokenizer with the chat
template applied), and its wall time is measured the same way: around the whole call.
A peer that is not installed or cannot run for this target raises `MethodUnavailable`; the
run reports it as skipped.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from outpace.bench.config import (
    HF_AR,
    PEERS,
    RunConfig,
    drafter_spec,
    is_adaptive,
    is_peer,
)
from outpace.bench.records import Generation
from outpace.errors import OutpaceError

LLAMA_INSTALL = "pip install llama-cpp-python"
LLAMA_N_CTX = 8192


class MethodUnavailable(Exception):
    """A peer cannot run here; the message says why (reported as 'skipped')."""


@dataclass(frozen=True)
class Settings:
    """What every method is asked to do on a turn."""

    max_new_tokens: int
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    draft_length: int = 4
    adaptive: bool = False  # outpace methods only

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @classmethod
    def from_config(cls, c: RunConfig, max_new_tokens: int | None = None) -> Settings:
        return cls(max_new_tokens or c.max_new_tokens, c.temperature, c.top_k, c.top_p, c.seed, c.draft_length,
                   c.adaptive)


class Method(Protocol):
    name: str

    def generate(self, prompt: Sequence[int], settings: Settings) -> Generation:
        """Generate up to settings.max_new_tokens after `prompt` (token ids)."""
        ...


def proposals_from_depths(proposed_at: Sequence[int], steps: int) -> list[int]:
    """Per-step proposal counts recovered from per-depth counts (proposed_at[i] = steps that
    proposed a token at depth i): exact as a multiset for chains, depths for trees."""
    counts = list(proposed_at) + [0]
    out = [0] * (steps - (counts[0] if proposed_at else 0))
    for d in range(1, len(counts)):
        out += [d] * (counts[d - 1] - counts[d])
    return out


def _finish(tokens: list[int], eos: frozenset[int], limit: int) -> tuple[list[int], str]:
    """Cut at the first eos (not counted, as outpace does); say why generation ended."""
    for i, t in enumerate(tokens):
        if t in eos:
            return tokens[:i], "eos"
    tokens = tokens[:limit]
    return tokens, "length" if len(tokens) >= limit else "stop"


# ---------------------------------------------------------------------------- outpace


class OutpaceMethod:
    """An outpace decoder (any drafter, or none for ``ar``)."""

    def __init__(self, name: str, decoder: Any, adaptive: bool = False) -> None:
        self.name = name
        self.decoder = decoder
        self.adaptive = adaptive  # on for this method alone (``METHOD@adaptive``)

    def generate(self, prompt: Sequence[int], settings: Settings) -> Generation:
        from outpace.decoder import GenerationConfig
        from outpace.sampling import SamplingConfig

        sampling = SamplingConfig(settings.temperature, settings.top_k, settings.top_p, settings.seed)
        # every turn pays its own prefill, as in Spec-Bench and for the llama-cpp-ar peer
        cfg = GenerationConfig(settings.max_new_tokens, sampling, (), settings.draft_length,
                               adaptive=settings.adaptive or self.adaptive, cache_prompt=False)
        t0 = time.perf_counter()
        result = self.decoder.generate(list(prompt), cfg)
        wall = time.perf_counter() - t0
        s = result.stats
        proposed = getattr(s, "proposed_lengths", None)
        exact = proposed is not None
        if proposed is None:
            proposed = proposals_from_depths(s.proposed_at, s.steps)
        return Generation(
            tuple(result.tokens), result.text, result.finish_reason, wall, s.steps,
            tuple(s.accepted_lengths), tuple(proposed), exact, s.prefill_s, s.draft_s, s.verify_s, s.other_s,
            s.drafter_state_bytes,
        )


# ---------------------------------------------------------------------------- transformers


class HFMethod:
    """transformers ``generate`` (plain, assisted or prompt lookup) on a loaded model."""

    def __init__(self, name: str, model: Any, tokenizer: Any, eos_ids: Sequence[int], **generate_kw: Any) -> None:
        self.name = name
        self.model = model
        self.tokenizer = tokenizer
        self.eos = frozenset(eos_ids)
        self.generate_kw = generate_kw  # assistant_model=... or prompt_lookup_num_tokens=...

    def _config(self, settings: Settings) -> Any:
        from transformers import GenerationConfig

        eos = sorted(self.eos)
        sampling: dict[str, Any] = (
            {"do_sample": False, "temperature": None, "top_k": None, "top_p": None}
            if settings.greedy
            else {"do_sample": True, "temperature": settings.temperature,
                  "top_k": settings.top_k or None, "top_p": settings.top_p}
        )
        lookup = self.generate_kw.get("prompt_lookup_num_tokens")
        return GenerationConfig(
            max_new_tokens=settings.max_new_tokens, min_new_tokens=0, repetition_penalty=1.0,
            no_repeat_ngram_size=0, eos_token_id=eos or None, pad_token_id=eos[0] if eos else 0,
            prompt_lookup_num_tokens=lookup, **sampling,
        )

    def generate(self, prompt: Sequence[int], settings: Settings) -> Generation:
        import torch

        ids = torch.tensor([list(prompt)], dtype=torch.long)
        extra = {k: v for k, v in self.generate_kw.items() if k != "prompt_lookup_num_tokens"}
        config = self._config(settings)
        if settings.seed is not None:
            torch.manual_seed(settings.seed)
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                      generation_config=config, **extra)
        wall = time.perf_counter() - t0
        tokens, reason = _finish(out[0, ids.shape[1]:].tolist(), self.eos, settings.max_new_tokens)
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        return Generation(tuple(tokens), text, reason, wall)


# ---------------------------------------------------------------------------- llama.cpp


class LlamaCppMethod:
    """llama-cpp-python generating from token ids, one token per ``generate`` iteration."""

    name = "llama-cpp-ar"

    def __init__(self, llm: Any, tokenizer: Any, eos_ids: Sequence[int], n_ctx: int) -> None:
        self.llm = llm
        self.tokenizer = tokenizer
        self.eos = frozenset(eos_ids) | {int(llm.token_eos())}
        self.n_ctx = n_ctx

    def generate(self, prompt: Sequence[int], settings: Settings) -> Generation:
        if len(prompt) + settings.max_new_tokens > self.n_ctx:
            raise OutpaceError(
                f"llama-cpp-ar: prompt of {len(prompt)} tokens + {settings.max_new_tokens} new tokens "
                f"exceeds its context of {self.n_ctx}"
            )
        if settings.greedy:
            sampling: dict[str, Any] = {"temp": 0.0, "top_k": 1, "top_p": 1.0, "min_p": 0.0}
        else:
            sampling = {"temp": settings.temperature, "top_k": settings.top_k, "top_p": settings.top_p, "min_p": 0.0}
            if settings.seed is not None:
                self.llm.set_seed(settings.seed)
        out: list[int] = []
        t0 = time.perf_counter()
        self.llm.reset()  # no prefix reuse between calls: every turn pays its own prefill
        stream = self.llm.generate(list(prompt), reset=True, repeat_penalty=1.0, **sampling)
        try:
            for token in stream:
                out.append(int(token))
                if token in self.eos or len(out) >= settings.max_new_tokens:
                    break
        finally:
            stream.close()
        wall = time.perf_counter() - t0
        tokens, reason = _finish(out, self.eos, settings.max_new_tokens)
        return Generation(tuple(tokens), self.tokenizer.decode(tokens, skip_special_tokens=True), reason, wall)


# ---------------------------------------------------------------------------- building


class _Probe(Exception):
    """Raised by the probing loader: the drafter spec parsed and asked for this model."""


def _probe_loader(spec: str, *args: Any, **kwargs: Any) -> Any:
    raise _Probe(spec)


def check_methods(methods: Sequence[str], dtype: str) -> None:
    """Reject unknown or malformed outpace methods before any model is loaded.

    Runs `make_drafter` with a loader that stops at the first model load, so every drafter the
    engine knows is accepted without this module listing them; a model it names must resolve.
    """
    from outpace import models
    from outpace.engine import make_drafter

    for method in methods:
        if is_peer(method):
            continue
        try:
            make_drafter(drafter_spec(method), None, dtype, _probe_loader)  # type: ignore[arg-type]
        except _Probe as probe:
            models.resolve(str(probe.args[0]))
        except OutpaceError as err:
            raise OutpaceError(
                f"unknown method {method!r}: {err}\n(peers: {', '.join(PEERS)}; 'ar' is outpace without a drafter)"
            ) from None
        except Exception:  # noqa: BLE001, S112 - needs a real target to check further; build() will
            continue


def build_methods(
    config: RunConfig, names: Sequence[str], say: Callable[[str], None]
) -> tuple[dict[str, Method], dict[str, str], Any]:
    """Load what `names` need. Returns (method by name, skip reason by name, the ``ar``
    decoder, which encodes every prompt)."""
    from outpace.engine import EngineSpec, build, engine_label

    def spec(drafter: str) -> EngineSpec:
        return EngineSpec(config.target, drafter, config.dtype, quant=config.quant, backend=config.backend)

    say(f"loading target {config.target} ({engine_label(config.backend, config.dtype, config.quant)}) ...")
    reference = build(spec("none")).decoder
    methods: dict[str, Method] = {}
    skipped: dict[str, str] = {}
    for name in names:
        if not is_peer(name):
            if name != "ar":
                say(f"building {name} ...")
            methods[name] = OutpaceMethod(name, build(spec(drafter_spec(name))).decoder, is_adaptive(name))
            continue
        try:
            methods[name] = _peer(name, config, reference, say)
        except MethodUnavailable as why:
            skipped[name] = str(why)
            say(f"skipping {name}: {why}")
    return methods, skipped, reference


def _torch_target(config: RunConfig) -> Any:
    """The torch model of the target: the very object outpace methods run when the backend is
    torch (quantized or not), else the target loaded in torch at `dtype`. Called with the
    arguments `outpace.engine.build` uses, so `load_cached` returns the object it holds."""
    from outpace.engine import load_cached

    quant = config.quant if config.backend == "torch" else None
    return load_cached(config.target, config.dtype, quant, backend="torch")


def _peer(name: str, config: RunConfig, reference: Any, say: Callable[[str], None]) -> Method:
    if name == "llama-cpp-ar":
        return _llama(config, reference, say)
    try:
        import transformers  # noqa: F401
    except ImportError as err:
        raise MethodUnavailable(f"transformers is not installed ({err})") from None
    target = _torch_target(config)
    model, tok, eos = getattr(target.backend, "model", None), target.tokenizer, target.eos_ids
    if model is None or not hasattr(model, "generate"):
        raise MethodUnavailable(f"{target.name} is not a transformers model here")
    if name == HF_AR:
        return HFMethod(name, model, tok, eos)
    if name == "hf-prompt-lookup":
        return HFMethod(name, model, tok, eos, prompt_lookup_num_tokens=config.draft_length)
    return HFMethod(name, model, tok, eos, assistant_model=_assistant(config, target, say))


def _assistant(config: RunConfig, target: Any, say: Callable[[str], None]) -> Any:
    from outpace.engine import load_cached

    say(f"loading hf-assisted draft {config.draft} ({config.dtype}) ...")
    try:
        draft = load_cached(config.draft, config.dtype, None, backend="torch")  # as draft-model: loads it
    except OutpaceError as err:
        raise MethodUnavailable(f"draft model {config.draft} cannot be loaded: {err}") from None
    if draft.tokenizer.get_vocab() != target.tokenizer.get_vocab():
        raise MethodUnavailable(f"draft model {config.draft} does not share the target's tokenizer")
    return getattr(draft.backend, "model", None)


def _llama(config: RunConfig, reference: Any, say: Callable[[str], None]) -> Method:
    from outpace import models

    source = models.resolve(config.target)
    if source.kind != "gguf":
        raise MethodUnavailable(f"the target is not a GGUF file ({source.kind}: {source.path_or_id}); llama.cpp needs one")
    try:
        from llama_cpp import Llama
    except ImportError as err:
        raise MethodUnavailable(f"llama-cpp-python is not installed ({err}); {LLAMA_INSTALL}") from None
    say(f"loading {source.gguf_file} in llama.cpp ...")
    threads = config.threads or os.cpu_count() or 1
    try:
        llm = Llama(model_path=source.path_or_id, n_ctx=LLAMA_N_CTX, n_threads=threads,
                    n_threads_batch=threads, verbose=False)
    except (ValueError, RuntimeError) as err:
        raise MethodUnavailable(f"llama.cpp cannot load {source.path_or_id}: {err}") from None
    return LlamaCppMethod(llm, reference.tokenizer, sorted(reference.eos_ids), LLAMA_N_CTX)
