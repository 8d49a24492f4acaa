"""The decoding loop: prefill, then draft -> one target forward -> verify -> commit, per step.

The prefill forwards the whole prompt, so the first step verifies its draft against the
prefill's last logits row and forwards only the draft (nothing, without one), as llama.cpp's
own generation takes its first token from the prefill; every later step forwards the last
committed token (the root) with its draft. The loop owns the order of calls and the
accounting; drafters, verifiers and backends own the rest. With no drafter it is plain
autoregressive decoding through the very same forward path, which is the reference every
speculative run is compared against.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeGuard

import torch

from outpace.backends.base import Backend
from outpace.drafters.base import (
    ChoosesVerifier,
    DraftContext,
    Drafter,
    GradesNodes,
    ReportsState,
)
from outpace.errors import OutpaceError
from outpace.held_cache import HeldCache
from outpace.policies import AdaptiveDraftLength, CostModel, GradeCounts
from outpace.sampling import SamplingConfig, make_rng
from outpace.stopping import TextStream
from outpace.tree import depths, with_root
from outpace.types import Draft, GenerationStats, StepStats, VerifyResult
from outpace.verify import verify

Messages = list[dict[str, str]]

#: Per-grade acceptance pooled over a decoder's requests keeps at most this weight per grade.
GRADE_MEMORY = 256.0


@dataclass(frozen=True)
class GenerationConfig:
    """Per-call settings. draft_length is the verification budget per step (chain length, or
    tree nodes for tree drafters)."""

    max_new_tokens: int = 128
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    stop: tuple[str, ...] = ()
    draft_length: int = 4
    ignore_eos: bool = False
    adaptive: bool = False  # pick each step's draft length or tree size (<= draft_length) from measured costs
    cache_prompt: bool = True  # reuse what this decoder's last generation left in the target's KV cache

    def __post_init__(self) -> None:
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens <= 0:
            raise OutpaceError(f"max_new_tokens must be a positive integer, got {self.max_new_tokens!r}")
        if not isinstance(self.draft_length, int) or self.draft_length < 0:
            raise OutpaceError(f"draft_length must be an integer >= 0, got {self.draft_length!r}")
        if isinstance(self.stop, str) or not all(isinstance(s, str) for s in self.stop):
            raise OutpaceError("stop must be a sequence of strings")
        if not isinstance(self.cache_prompt, bool):
            raise OutpaceError(f"cache_prompt must be True or False, got {self.cache_prompt!r}")


@dataclass
class Chunk:
    """One streamed piece: the tokens committed by a step and the text that became final.
    The last chunk has `finish_reason` ('eos', 'stop' or 'length') and `stats`."""

    tokens: list[int]
    text: str
    finish_reason: str | None = None
    stats: GenerationStats | None = None


@dataclass
class Result:
    text: str
    tokens: list[int]
    finish_reason: str
    stats: GenerationStats = field(default_factory=GenerationStats)


class Decoder:
    """Generates with `target`, speculatively when a drafter is given."""

    def __init__(
        self,
        target: Backend,
        tokenizer: Any,
        drafter: Drafter | None = None,
        eos_ids: Sequence[int] | None = None,
        costs: CostModel | None = None,
    ) -> None:
        if drafter is not None and drafter.makes_trees and not target.capabilities.trees:
            raise OutpaceError(f"drafter {drafter.name} drafts trees; backend {target.name} cannot verify them")
        if drafter is not None and not target.capabilities.rollback:
            raise OutpaceError(f"speculative decoding needs cache rollback; {target.name} has none")
        self.target = target
        self.tokenizer = tokenizer
        self.drafter = drafter
        if eos_ids is None:
            eos = getattr(tokenizer, "eos_token_id", None)
            eos_ids = [] if eos is None else [eos]
        self.eos_ids = frozenset(eos_ids)
        self.costs = costs  # shared by all requests, refined by every step
        self.grade_counts = GradeCounts(memory=GRADE_MEMORY)  # ditto: acceptance per draft grade
        self._held = HeldCache(target)  # the target's cache, reused by the next generation
        self.verifier = drafter.verifier if isinstance(drafter, ChoosesVerifier) else verify

    # ------------------------------------------------------------------ text in, text out

    def encode(self, prompt: str | Messages, chat: bool | None = None) -> list[int]:
        """Token ids of a prompt (see `encode_prompt`)."""
        return encode_prompt(self.tokenizer, prompt, chat, self.target.name)

    def stream(
        self,
        prompt: str | Messages | Sequence[int],
        cfg: GenerationConfig,
        stats: GenerationStats | None = None,
    ) -> Iterator[Chunk]:
        """Stream text chunks; the last one carries finish_reason and stats. Pass `stats` to
        read the accounting of a stream that is stopped early."""
        ids = list(prompt) if _is_ids(prompt) else self.encode(prompt)  # type: ignore[arg-type]
        text = TextStream(self.tokenizer, cfg.stop)
        stats = stats if stats is not None else GenerationStats()
        reason = "length"
        for tokens, why in self.stream_ids(ids, cfg, stats):
            delta = text.push(tokens)
            if text.stopped:
                reason = "stop"
                yield Chunk(tokens, delta)
                break
            reason = why or reason
            yield Chunk(tokens, delta)
        yield Chunk([], text.flush(), reason, stats)

    def generate(self, prompt: str | Messages | Sequence[int], cfg: GenerationConfig) -> Result:
        tokens: list[int] = []
        parts: list[str] = []
        for chunk in self.stream(prompt, cfg):
            tokens += chunk.tokens
            parts.append(chunk.text)
            if chunk.stats is not None:
                return Result("".join(parts), tokens, chunk.finish_reason or "length", chunk.stats)
        raise AssertionError("stream ended without a final chunk")

    # ------------------------------------------------------------------ the token loop

    def stream_ids(
        self, prompt: Sequence[int], cfg: GenerationConfig, stats: GenerationStats | None = None
    ) -> Iterator[tuple[list[int], str | None]]:
        """Yield (tokens committed this step, finish reason or None). Fills `stats`."""
        stats = stats if stats is not None else GenerationStats()
        self._check_room(prompt, cfg)
        target, drafter, held = self.target, self.drafter, self._held
        policy = self._policy(cfg)
        if policy is not None and policy.hopeless():
            drafter, policy = None, None  # measured: drafting cannot pay here; not even its prefill
        rng = make_rng(cfg.sampling.seed)
        tokens = list(prompt)
        t0 = time.perf_counter()
        try:
            if not cfg.cache_prompt:
                held.drop()
            # The prompt's last token is forwarded too (even if cached), so the first step takes
            # its logits from the prefill: it forwards only its draft, or nothing.
            head: torch.Tensor | None = held.hold(tokens, min_new=1)  # [vocab]
            stats.cached_tokens = held.reused
            if drafter is not None:
                drafter.start(tokens)
            stats.prompt_tokens = len(tokens)
            stats.prefill_s = time.perf_counter() - t0
            produced = 0
            while produced < cfg.max_new_tokens:
                step = StepStats()
                t = time.perf_counter()
                draft = Draft.empty()
                after_prefill = head is not None
                if drafter is not None:
                    wanted = cfg.draft_length if policy is None else policy.budget(after_prefill)
                    budget = min(wanted, cfg.max_new_tokens - produced - 1, target.max_context - len(tokens))
                    if budget > 0:
                        draft = drafter.propose(DraftContext(tokens, budget, cfg.sampling, rng))
                drafted, proposed = len(draft), draft
                if policy is not None:
                    draft = policy.select(draft, after_prefill)
                t_draft = time.perf_counter()
                emitted, accepted, logits = self._verify_step(held.cache, tokens[-1], head, draft, cfg.sampling, rng)
                t_verify = time.perf_counter()
                held.extended(emitted if after_prefill else [tokens[-1], *emitted])
                head = None
                if drafter is not None and len(draft):
                    drafter.observe(draft, accepted, logits)
                first = emitted[0]  # [draft tokens accepted..., the next token]: never empty
                emitted, reason = self._finish(emitted, produced, cfg)
                tokens += emitted
                produced += len(emitted)
                step.proposed, step.depth = len(draft), _depth(draft)
                step.accepted = len(accepted.accepted)
                step.draft_s, step.verify_s = t_draft - t, t_verify - t_draft
                step.other_s = time.perf_counter() - t_verify
                if policy is not None:
                    policy.observe(draft, accepted.accepted)
                    if drafted and not len(draft):
                        policy.observe_unverified(proposed, first)
                    forwarded = len(draft) + (not after_prefill)
                    if forwarded:
                        policy.costs.observe_verify(forwarded, step.verify_s)
                    policy.costs.observe_draft(drafted, step.draft_s)
                stats.add_step(step)
                stats.new_tokens = produced
                if reason is not None and isinstance(drafter, ReportsState):
                    stats.drafter_state_bytes = drafter.state_bytes()
                yield emitted, reason
                if reason is not None:
                    return
        except Exception:
            held.drop()  # what the cache holds is unknown after a failed step
            raise
        finally:
            held.park()  # for this decoder's next generation (the next turn of a chat)

    def _policy(self, cfg: GenerationConfig) -> AdaptiveDraftLength | None:
        if not cfg.adaptive or self.drafter is None:
            return None
        if self.costs is None:
            raise OutpaceError("adaptive draft length needs a cost model (Decoder(costs=...))")
        pooled = self.grade_counts if isinstance(self.drafter, GradesNodes) else None
        return AdaptiveDraftLength(self.costs, cfg.draft_length, pooled=pooled)

    def _verify_step(
        self,
        cache: Any,
        root: int,
        head: torch.Tensor | None,  # [vocab] or None
        draft: Draft,
        sampling: SamplingConfig,
        rng: torch.Generator,
    ) -> tuple[list[int], VerifyResult, torch.Tensor]:
        """One target forward, verification, and cache compaction. The forward runs [root] +
        draft; or, when `head` holds the root's logits already (the cache holds the root: the
        first step after a prefill), the draft alone, and no forward at all for an empty draft.
        Returns the emitted tokens, the verdict and the logits, [len(draft) + 1, vocab]."""
        start = self.target.cache_len(cache)
        forward = self.target.forward
        if head is None:
            inputs, rows = torch.cat([torch.tensor([root]), draft.tokens]), [0]
            logits = forward(cache, inputs, None if draft.is_chain else with_root(draft.parents)).logits
        else:
            inputs, rows, logits = draft.tokens, [], head[None]
            if len(draft):  # parent -1: the root, which the cache holds
                out = forward(cache, inputs, None if draft.is_chain else draft.parents).logits
                logits = torch.cat([logits, out])
        shift = len(rows)  # a root row, kept even if verification fails, keeps the cache consistent
        try:
            result = self.verifier(draft, logits, sampling, rng)
            rows += [i + shift for i in result.accepted]
        finally:
            if len(inputs):
                self.target.keep(cache, start, rows)
        return result.emitted(draft), result, logits

    def _finish(self, emitted: list[int], produced: int, cfg: GenerationConfig) -> tuple[list[int], str | None]:
        """Cut a step's tokens at eos or the token limit; say why generation ends, if it does."""
        if not cfg.ignore_eos:
            for i, t in enumerate(emitted):
                if t in self.eos_ids:
                    return emitted[:i], "eos"
        emitted = emitted[: cfg.max_new_tokens - produced]
        return emitted, "length" if produced + len(emitted) >= cfg.max_new_tokens else None

    def _check_room(self, prompt: Sequence[int], cfg: GenerationConfig) -> None:
        if not prompt:
            raise OutpaceError("the prompt is empty")
        limit = self.target.max_context
        if len(prompt) + cfg.max_new_tokens > limit:
            raise OutpaceError(
                f"prompt of {len(prompt)} tokens + max_new_tokens {cfg.max_new_tokens} exceeds "
                f"{self.target.name}'s context window of {limit} tokens"
            )
        if any(t < 0 or t >= self.target.vocab_size for t in prompt):
            raise OutpaceError(f"prompt holds token ids outside the vocabulary of {self.target.vocab_size}")


def encode_prompt(tokenizer: Any, prompt: str | Messages, chat: bool | None = None, model: str = "the model") -> list[int]:
    """Token ids of a prompt: a list of chat messages or a string (with the chat template when
    `chat` is True, or None and the tokenizer has one)."""
    if isinstance(prompt, str):
        if not prompt.strip():
            raise OutpaceError("the prompt is empty")
        has_template = getattr(tokenizer, "chat_template", None) is not None
        if chat or (chat is None and has_template):
            prompt = [{"role": "user", "content": prompt}]
        else:
            return list(tokenizer.encode(prompt, add_special_tokens=True))
    if not prompt or not any(str(m.get("content", "")).strip() for m in prompt):
        raise OutpaceError("the chat has no message with content")
    if getattr(tokenizer, "chat_template", None) is None:
        raise OutpaceError(f"{model}'s tokenizer has no chat template; pass plain text")
    ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True)
    return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)


def _depth(draft: Draft) -> int:
    if draft.is_chain:
        return len(draft)
    return int(depths(draft.parents).max())


def _is_ids(prompt: object) -> TypeGuard[Sequence[int]]:
    return isinstance(prompt, (list, tuple)) and (not prompt or isinstance(prompt[0], int))
