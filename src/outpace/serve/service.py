"""From a validated API request to a generation ready to queue, and back to API figures.

No HTTP here: `GenerationService.plan_*` checks everything that can be checked before any
work is done (model name, unsupported fields, prompt, context window, sampling values,
speculation choice) and raises `APIError` for the client; `work` is the generator the
scheduler's worker runs, and `report` turns a generation's statistics into the `speculative`
echo of the response.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from outpace.errors import OutpaceError
from outpace.serve.errors import APIError, bad_request, model_not_found
from outpace.serve.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    PromptTokensDetails,
    SpeculativeReport,
    SpeculativeTimes,
    Usage,
    _GenerationRequest,
)

if TYPE_CHECKING:
    from outpace.decoder import Chunk, Decoder, GenerationConfig
    from outpace.engine import Engine
    from outpace.serve.metrics import Metrics
    from outpace.types import GenerationStats

log = logging.getLogger(__name__)

#: OpenAI's default temperature; send 0 for greedy (and reproducible) decoding.
DEFAULT_TEMPERATURE = 1.0


@dataclass(frozen=True)
class ServeSettings:
    """Server-wide settings (the `outpace serve` options that are not about models)."""

    model_id: str
    aliases: tuple[str, ...] = ()  # other names accepted in the `model` field
    max_queue: int = 16  # requests that may wait while one generates
    draft_length: int = 4  # default draft tokens (or tree nodes) per step
    adaptive: bool = False  # default: choose each step's draft length from measured costs
    default_max_tokens: int = 512  # chat completions without max_tokens (capped by the context)
    completion_default_max_tokens: int = 16  # text completions without max_tokens, as OpenAI


@dataclass(frozen=True)
class Plan:
    """A generation ready to run: prompt ids, settings, and which decoder runs it."""

    prompt_ids: list[int]
    config: GenerationConfig
    decoder: Decoder
    drafter: str  # the drafter's name, or "none"

    @property
    def speculative(self) -> bool:
        return self.decoder.drafter is not None


class GenerationService:
    """Plans and runs generations for one engine."""

    def __init__(self, engine: Engine, settings: ServeSettings, metrics: Metrics) -> None:
        from outpace.decoder import Decoder

        dec = engine.decoder
        self.settings = settings
        self.metrics = metrics
        self.engine_drafter = engine.drafter_name
        self._speculative = dec if dec.drafter is not None else None
        eos_ids = sorted(dec.eos_ids)
        self._plain = Decoder(dec.target, dec.tokenizer, None, eos_ids=eos_ids)
        # The worker thread detokenizes with dec.tokenizer; requests are tokenized on the event
        # loop with a copy, so one Rust tokenizer is never used from two threads at once.
        self._encoder = Decoder(dec.target, _private_copy(dec.tokenizer), None, eos_ids=eos_ids)

    @property
    def model_ids(self) -> tuple[str, ...]:
        return (self.settings.model_id, *self.settings.aliases)

    @property
    def max_context(self) -> int:
        return int(self._plain.target.max_context)

    # ------------------------------------------------------------------ planning

    def plan_chat(self, req: ChatCompletionRequest) -> Plan:
        self._check_common(req)
        messages = [m.as_template_message() for m in req.messages]
        ids = self._encode(lambda: self._encoder.encode(messages), "messages")
        return self._plan(req, ids, "messages", req.requested_max_tokens(), self.settings.default_max_tokens)

    def plan_completion(self, req: CompletionRequest) -> Plan:
        self._check_common(req)
        if isinstance(req.prompt, str):
            text = req.prompt
            ids = self._encode(lambda: self._encoder.encode(text, chat=False), "prompt")
        else:
            ids = self._check_token_ids(req.prompt)
        return self._plan(req, ids, "prompt", req.max_tokens, self.settings.completion_default_max_tokens)

    def _check_common(self, req: _GenerationRequest) -> None:
        if req.model not in self.model_ids:
            raise model_not_found(req.model)
        unsupported = req.unsupported()
        if unsupported is not None:
            name, value = unsupported
            raise bad_request(f"'{name}' = {value!r} is not supported by this server", name, "unsupported_parameter")

    def _plan(self, req: _GenerationRequest, ids: list[int], prompt_param: str, max_tokens: int | None,
              default_max_tokens: int) -> Plan:
        max_new = self._max_new_tokens(len(ids), max_tokens, default_max_tokens, prompt_param)
        decoder, drafter, draft_length, adaptive = self._speculation(req)
        config = self._config(req, max_new, draft_length, adaptive)
        return Plan(ids, config, decoder, drafter)

    def _encode(self, encode: Callable[[], list[int]], param: str) -> list[int]:
        try:
            ids = encode()
        except OutpaceError as err:
            raise bad_request(str(err), param) from None
        if not ids:
            raise bad_request("the prompt is empty", param)
        return ids

    def _check_token_ids(self, ids: Sequence[int]) -> list[int]:
        vocab = int(self._plain.target.vocab_size)
        bad = [t for t in ids if not 0 <= t < vocab]
        if bad:
            raise bad_request(f"token id {bad[0]} is outside the vocabulary (0..{vocab - 1})", "prompt")
        return list(ids)

    def _max_new_tokens(self, prompt_len: int, requested: int | None, default: int, prompt_param: str) -> int:
        """The request's token budget; 400 when it cannot fit the context window."""
        room = self.max_context - prompt_len
        if requested is None:
            if room <= 0:
                raise _too_long(prompt_len, 1, self.max_context, prompt_param)
            return min(default, room)
        if requested > room:
            raise _too_long(prompt_len, requested, self.max_context, "max_tokens" if room > 0 else prompt_param)
        return requested

    def _speculation(self, req: _GenerationRequest) -> tuple[Decoder, str, int, bool]:
        """(decoder, drafter name, draft length, adaptive) for the request's `speculative` field."""
        opts = req.speculative
        choice = "default" if opts is None else opts.drafter
        draft_length = self.settings.draft_length
        adaptive = self.settings.adaptive
        if opts is not None:
            draft_length = opts.draft_length if opts.draft_length is not None else draft_length
            adaptive = opts.adaptive if opts.adaptive is not None else adaptive
        if choice not in self.drafter_choices():
            raise bad_request(
                f"unknown drafter {choice!r} for this server; choose one of {', '.join(self.drafter_choices())}",
                "speculative.drafter",
            )
        if choice == "none" or self._speculative is None:
            return self._plain, "none", draft_length, False
        if adaptive and getattr(self._speculative, "costs", None) is None:
            raise bad_request("this server has no cost profile for adaptive draft lengths", "speculative.adaptive")
        return self._speculative, self._speculative_name(), draft_length, adaptive

    def drafter_choices(self) -> tuple[str, ...]:
        """Values a request may put in speculative.drafter: the server loads one drafter."""
        names = ["default", "none"]
        if self._speculative is not None:
            for name in (self._speculative_name(), self.engine_drafter):
                if name not in names:
                    names.append(name)
        return tuple(names)

    def _speculative_name(self) -> str:
        drafter = self._speculative.drafter if self._speculative is not None else None
        return str(getattr(drafter, "name", self.engine_drafter))

    def _config(self, req: _GenerationRequest, max_new: int, draft_length: int, adaptive: bool) -> GenerationConfig:
        from outpace.decoder import GenerationConfig
        from outpace.sampling import SamplingConfig

        temperature = DEFAULT_TEMPERATURE if req.temperature is None else req.temperature
        try:
            sampling = SamplingConfig(
                float(temperature),
                req.top_k or 0,
                1.0 if req.top_p is None else float(req.top_p),
                req.seed,
            )
            return GenerationConfig(max_new, sampling, tuple(req.stop or ()), draft_length, adaptive=adaptive)
        except OutpaceError as err:
            raise bad_request(str(err), _param_of(str(err))) from None

    # ------------------------------------------------------------------ running

    def work(self, plan: Plan) -> Iterator[Chunk]:
        """The generation, for the scheduler's worker thread: `Decoder.stream` plus metrics.
        Closing this generator closes the decoder's stream (cancellation between steps)."""
        self.metrics.generation_started(len(plan.prompt_ids))
        stream = plan.decoder.stream(plan.prompt_ids, plan.config)
        try:
            while True:
                start = time.perf_counter()
                chunk = next(stream, None)
                if chunk is None:
                    return
                self.metrics.tokens_generated(len(chunk.tokens), time.perf_counter() - start)
                if chunk.stats is not None:
                    self.metrics.generation_finished(finish_reason(chunk.finish_reason), chunk.stats)
                yield chunk
        finally:
            close = getattr(stream, "close", None)  # a generator: closing it ends the decoding loop
            if close is not None:
                close()

    def report(self, plan: Plan, stats: GenerationStats) -> SpeculativeReport:
        """The `speculative` echo: the request's settings and what they achieved."""
        proposed = sum(stats.proposed_at)
        return SpeculativeReport(
            enabled=plan.speculative,
            drafter=plan.drafter,
            draft_length=plan.config.draft_length if plan.speculative else 0,
            adaptive=plan.config.adaptive,
            steps=stats.steps,
            tau=round(stats.tau, 4),
            acceptance_rate=round(sum(stats.accepted_at) / proposed, 4) if proposed else 0.0,
            acceptance_by_position=[round(a, 4) for a in stats.acceptance_by_position],
            tokens_per_s=round(stats.tokens_per_s, 3),
            time_s=SpeculativeTimes(
                prefill=round(stats.prefill_s, 4),
                draft=round(stats.draft_s, 4),
                verify=round(stats.verify_s, 4),
                other=round(stats.other_s, 4),
                total=round(stats.total_s, 4),
            ),
        )


def usage(plan: Plan, completion_tokens: int, stats: GenerationStats) -> Usage:
    prompt = len(plan.prompt_ids)
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion_tokens,
        total_tokens=prompt + completion_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=stats.cached_tokens),
    )


def finish_reason(decoder_reason: str | None) -> str:
    """OpenAI's finish_reason: 'stop' for end-of-sequence or a stop string, else 'length'."""
    return "stop" if decoder_reason in ("eos", "stop") else "length"


#: Prefixes of OutpaceError messages -> the request parameter they are about.
_PARAMS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "seed": "seed",
    "max_new_tokens": "max_tokens",
    "draft_length": "speculative.draft_length",
    "stop": "stop",
}


def _param_of(message: str) -> str | None:
    for prefix, param in _PARAMS.items():
        if message.startswith(prefix):
            return param
    return None


def _too_long(prompt_len: int, max_tokens: int, context: int, param: str) -> APIError:
    return bad_request(
        f"This model's maximum context length is {context} tokens. However, you requested "
        f"{prompt_len + max_tokens} tokens ({prompt_len} in the prompt, {max_tokens} for the completion). "
        "Please reduce the length of the prompt or of max_tokens.",
        param,
        "context_length_exceeded",
    )


def _private_copy(tokenizer: object) -> object:
    """A deep copy of the tokenizer, or the tokenizer itself if it cannot be copied."""
    try:
        return copy.deepcopy(tokenizer)
    except Exception:  # a tokenizer that cannot be copied is still usable, with the risk noted
        log.warning("could not copy the tokenizer; requests and the worker will share it", exc_info=True)
        return tokenizer
