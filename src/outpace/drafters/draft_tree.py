"""Draft *trees* from a draft model, for the multi-draft verifiers of `outpace.verify.multidraft`.

Three ways to grow the tree (p/q notation of `outpace.verify`; q is the draft model's processed
distribution at a node, `outpace.sampling.probs`):

- **SpecTr** (Sun et al., "SpecTr: Fast Speculative Decoding via Optimal Transport", NeurIPS
  2023): k chains of `depth` tokens drawn i.i.d. from the draft model, merged into a trie that
  remembers which chain passes where (`ChainsDraft`); verified by K-SEQ.
- **Recursive SD** (Jeon et al., "Recursive Speculative Decoding: Accelerating LLM Inference via
  Sampling Without Replacement", 2024): siblings drawn *without replacement*, either by the
  Gumbel-top-k trick with fixed branching per level (RSD-C) or by stochastic beam search (Kool et
  al. 2019), which keeps the `width` best sequences per level and so truncates unlikely branches
  early (RSD-S); verified by recursive rejection sampling without replacement.
- **DySpec** (Xiong et al., "DySpec: Faster Speculative Decoding with Dynamic Token Tree
  Structure", 2024): the tree grows greedily at run time under a node budget, always where the
  draft model expects the most accepted tokens (a max-heap over candidate expansions, valued by
  the draft probability of the path); siblings are drawn without replacement, so the same
  verifier as RSD applies.

At temperature 0 every builder is deterministic with distinct siblings (top tokens of the draft's
temperature-1 softmax), and greedy tree verification is exact.

Model access goes through an `Expand` function, (tokens, parents, need) -> the draft logits
after each `need` node, so the builders are pure and testable with synthetic models. The
`DraftCache` implements it on a `Backend` (tree attention) and keeps the draft KV cache in step
with the committed tokens across steps.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import torch

from outpace.backends.base import Backend
from outpace.drafters.base import DraftContext
from outpace.drafters.draft_model import check_same_tokenizer
from outpace.errors import OutpaceError
from outpace.held_cache import HeldCache
from outpace.sampling import SamplingConfig, probs, sample
from outpace.types import Draft, VerifyResult
from outpace.verify.multidraft import ChainsDraft, rsd_verify, spectr_verify

if TYPE_CHECKING:
    from outpace.backends.torch import LoadedModel

    Loader = Callable[..., LoadedModel]  # (spec, dtype, quant=None) -> LoadedModel, as in the engine

#: (tokens, parents) of the tree so far, and the nodes whose next-token logits are wanted
#: -> [len(need), vocab] draft logits.
Expand = Callable[[list[int], list[int], list[int]], torch.Tensor]


class _Tree:
    """A draft tree under construction, in topological (creation) order."""

    def __init__(self) -> None:
        self.tokens: list[int] = []
        self.parents: list[int] = []
        self.rows: list[torch.Tensor | None] = []  # q the node was drawn from (None: greedy)

    def __len__(self) -> int:
        return len(self.tokens)

    def add(self, parent: int, token: int, q: torch.Tensor | None) -> int:
        self.tokens.append(token)
        self.parents.append(parent)
        self.rows.append(q)
        return len(self.tokens) - 1

    def parts(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        rows = [r for r in self.rows if r is not None]
        q = torch.stack(rows) if rows and len(rows) == len(self.rows) else None
        return torch.tensor(self.tokens, dtype=torch.long), torch.tensor(self.parents, dtype=torch.long), q


def ranking(logits: torch.Tensor, sampling: SamplingConfig) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(weights [vocab] that rank and value candidate tokens, q [vocab] to draw from or None).
    Sampling: both are q. Temperature 0: the temperature-1 softmax ranks, nothing is drawn."""
    if sampling.greedy:
        return logits.float().softmax(-1), None
    q = probs(logits, sampling)
    return q, q


def gumbel(shape: int, rng: torch.Generator) -> torch.Tensor:
    """[shape] standard Gumbel noise, float64 (uniforms never round to 0 in practice)."""
    u = torch.rand(shape, generator=rng, dtype=torch.float64).clamp_min_(1e-300)
    return -torch.log(-torch.log(u))


def top_without_replacement(
    weights: torch.Tensor,  # [vocab] q (rng given) or ranking weights (rng None)
    m: int,
    rng: torch.Generator | None,
) -> list[int]:
    """m distinct tokens of positive weight. With rng: a sample without replacement from q in
    drawing order (the Gumbel-top-k trick: top m of log q + Gumbel noise). Without: the top m."""
    keys = weights.double().log()
    if rng is not None:
        keys = keys + gumbel(keys.shape[0], rng)
    m = min(m, int((weights > 0).sum()))
    return keys.topk(m).indices.tolist() if m > 0 else []


# ------------------------------------------------------------------------------ builders


def iid_chains(
    root_logits: torch.Tensor,  # [vocab] draft logits after the root
    expand: Expand,
    k: int,
    depth: int,
    sampling: SamplingConfig,
    rng: torch.Generator,
) -> ChainsDraft:
    """SpecTr's draft: k chains of `depth` tokens drawn i.i.d. from q, merged into a trie (shared
    prefixes are one node; `ends` keeps each chain). At temperature 0 the chains coincide: one
    greedy chain."""
    tree = _Tree()
    dist = {-1: probs(root_logits, sampling)}
    index: dict[tuple[int, int], int] = {}
    at = [-1] * (1 if sampling.greedy else k)
    for _ in range(depth):
        need = sorted({v for v in at if v not in dist})
        if need:
            for v, row in zip(need, expand(tree.tokens, tree.parents, need)):
                dist[v] = probs(row, sampling)
        for i, v in enumerate(at):
            qv = dist[v]
            x = int(qv.argmax()) if sampling.greedy else sample(qv, rng)
            node = index.get((v, x))
            if node is None:
                node = index[(v, x)] = tree.add(v, x, None if sampling.greedy else qv)
            at[i] = node
    tokens, parents, q = tree.parts()
    return ChainsDraft(tokens, parents, q, ends=tuple(at))


def gumbel_tree(
    root_logits: torch.Tensor,  # [vocab]
    expand: Expand,
    branching: Sequence[int],
    budget: int,
    sampling: SamplingConfig,
    rng: torch.Generator,
) -> Draft:
    """RSD-C: every node of level l gets branching[l] children drawn without replacement by the
    Gumbel-top-k trick, in drawing order; nodes are created level by level and creation stops at
    `budget` nodes (a cut that depends on the shape only, never on the tokens)."""
    tree = _Tree()
    frontier, logits_of = [-1], {-1: root_logits}
    for level, width in enumerate(branching):
        if not frontier or len(tree) >= budget:
            break
        if level:
            logits_of.update(zip(frontier, expand(tree.tokens, tree.parents, frontier)))
        nxt = []
        for v in frontier:
            room = budget - len(tree)
            if room <= 0:
                break
            weights, q = ranking(logits_of[v], sampling)
            for x in top_without_replacement(weights, min(width, room), None if q is None else rng):
                nxt.append(tree.add(v, x, q))
        frontier = nxt
    return Draft(*tree.parts())


def conditional_gumbel(top: float, gt: torch.Tensor) -> torch.Tensor:
    """Stochastic beam search's top-down step (Kool et al. 2019, appendix B): Gumbels gt [n]
    shifted so that their maximum equals the parent's value `top`, order preserved:
    -log(exp(-top) - exp(-max gt) + exp(-gt)), in a numerically stable form."""
    z = gt.max()
    a = gt - z  # <= 0
    log1mexp = torch.where(a > -0.6931, torch.log(-torch.expm1(a)), torch.log1p(-torch.exp(a)))
    v = top - gt + log1mexp
    return top - torch.relu(v) - torch.log1p(torch.exp(-v.abs()))


def beam_tree(
    root_logits: torch.Tensor,  # [vocab]
    expand: Expand,
    width: int,
    depth: int,
    sampling: SamplingConfig,
    rng: torch.Generator,
) -> Draft:
    """RSD-S: stochastic beam search over draft sequences; the tree is the union of the `width`
    sequences kept at each of `depth` levels. A kept node's children, in decreasing perturbed
    value, are a draw without replacement from q; whether the next one is kept depends on its
    perturbed value, which is independent of which token it is. Temperature 0: beam search on
    the draft's log-probabilities."""
    tree = _Tree()
    beam: list[tuple[int, float, float]] = [(-1, 0.0, 0.0)]  # (node, log q of the path, value)
    logits_of = {-1: root_logits}
    for level in range(depth):
        if level:
            logits_of.update(zip([b[0] for b in beam], expand(tree.tokens, tree.parents, [b[0] for b in beam])))
        cands: list[tuple[float, int, int, float, torch.Tensor | None]] = []
        for rank, (v, phi, value) in enumerate(beam):
            weights, q = ranking(logits_of[v], sampling)
            phis = phi + weights.double().log()  # [vocab]
            keys = phis if q is None else conditional_gumbel(value, phis + gumbel(phis.shape[0], rng))
            top = keys.topk(min(width, int((weights > 0).sum())))
            xs = top.indices.tolist()
            cands += [(k_, rank, x, f, q) for k_, x, f in zip(top.values.tolist(), xs, phis[xs].tolist())]
        kept = sorted(cands, key=lambda c: -c[0])[:width]
        kept.sort(key=lambda c: (c[1], -c[0]))  # siblings together, in drawing order
        beam = [(tree.add(beam[r][0], x, q), phi, key) for key, r, x, phi, q in kept]
        if not beam:
            break
    return Draft(*tree.parts())


def _slot_value(value: float, weights: torch.Tensor, taken: torch.Tensor, greedy: bool) -> float:
    """Priority of drawing one more child of a node: the expected value (path probability under
    the draft) of that child. Greedy: the exact value of the next-best token."""
    rest = weights.masked_fill(taken, 0.0)
    mass = float(rest.sum())
    if mass <= 1e-12:
        return 0.0
    return value * (float(rest.max()) if greedy else float((rest * rest).sum()) / mass)


def dynamic_tree(
    root_logits: torch.Tensor,  # [vocab]
    expand: Expand,
    budget: int,
    sampling: SamplingConfig,
    rng: torch.Generator,
) -> Draft:
    """DySpec: grow the tree one node at a time where the expected gain is largest. A node's
    value is the draft probability of its path (DySpec's estimate of the chance the target
    accepts it); the heap holds one slot per node, "draw its next child", valued before the child
    is drawn, so the shape never depends on a token before it is drawn. Draft forwards happen
    only when a node still waiting for its distribution could beat the best slot."""
    tree = _Tree()
    greedy = sampling.greedy
    w_root, q_root = ranking(root_logits, sampling)
    weights, qs = {-1: w_root}, {-1: q_root}
    taken = {-1: torch.zeros_like(w_root, dtype=torch.bool)}
    value = {-1: 1.0}
    heap = [(-_slot_value(1.0, w_root, taken[-1], greedy), 0, -1)]
    pending: list[int] = []
    order = 1
    while len(tree) < budget:
        if heap and heap[0][0] < 0 and (not pending or -heap[0][0] >= max(value[c] for c in pending)):
            _, _, v = heapq.heappop(heap)
            rest = weights[v].masked_fill(taken[v], 0.0)
            x = int(rest.argmax()) if greedy else sample(rest, rng)
            c = tree.add(v, x, qs[v])
            value[c] = value[v] * float(weights[v][x])
            taken[v][x] = True
            pending.append(c)
            heapq.heappush(heap, (-_slot_value(value[v], weights[v], taken[v], greedy), order, v))
        elif pending:
            for c, row in zip(pending, expand(tree.tokens, tree.parents, pending)):
                weights[c], qs[c] = ranking(row, sampling)
                taken[c] = torch.zeros_like(weights[c], dtype=torch.bool)
                heapq.heappush(heap, (-_slot_value(value[c], weights[c], taken[c], greedy), order, c))
                order += 1
            pending = []
        else:
            break
        order += 1
    return Draft(*tree.parts())


# ------------------------------------------------------------------------ the draft model


class DraftCache:
    """The draft model's KV cache for tree drafting, in step with the committed tokens.

    Holds the committed tokens, then the tree nodes fed in the last forward (`_fed`, in cache
    order). A new forward appends to the cache when every cached node is an ancestor of every
    node to feed (tree attention sees the whole cache); otherwise it rolls back to the longest
    cached chain that is, and re-feeds the rest. After verification, `compact` keeps the
    accepted path's cached nodes, so the next step feeds only what is new (as `DraftModelDrafter`
    does for chains: longest common prefix, rollback, feed the rest)."""

    def __init__(self, backend: Backend) -> None:
        if not backend.capabilities.rollback or not backend.capabilities.trees:
            raise OutpaceError(f"draft model backend {backend.name} needs cache rollback and token trees")
        self.backend = backend
        self._held = HeldCache(backend)  # the committed tokens, then the tree nodes below
        self._committed = 0  # a prefix of the held tokens known to be committed
        self._n = 0  # committed tokens in the cache during the current step
        self._fed: list[int] = []  # tree nodes after the committed tokens, in cache order
        self._fed_tokens: list[int] = []  # their tokens
        self._logits: dict[int, torch.Tensor] = {}  # node -> [vocab] next-token logits

    def start(self, prompt: Sequence[int]) -> None:
        self._held.drop()  # each generation pays its own draft prefill
        self._held.hold(prompt[:-1])
        self._committed = len(prompt) - 1

    def sync(self, tokens: Sequence[int]) -> torch.Tensor:
        """Bring the cache to exactly `tokens`; return the logits after the root: [vocab]."""
        logits = self._held.hold(tokens, known=self._committed, min_new=1)
        assert logits is not None  # min_new=1: the root is always forwarded
        self._committed = self._n = len(tokens)
        self._fed, self._fed_tokens, self._logits = [], [], {}
        return logits

    def expand(self, tokens: list[int], parents: list[int], need: list[int]) -> torch.Tensor:
        """Draft logits after each `need` node of the tree (tokens, parents): [len(need), vocab]."""
        want = _closure(parents, need)
        keep = _reusable(self._fed, parents, want)
        # also when nothing is dropped: a backend that keeps tree nodes apart (llama.cpp) folds
        # the kept chain into the sequence the next forward extends
        self.backend.rollback(self._held.cache, self._n + keep)
        del self._fed[keep:], self._fed_tokens[keep:]
        cached = set(self._fed)
        feed = [v for v in want if v not in cached]
        if feed:
            local = {v: i for i, v in enumerate(feed)}
            par = torch.tensor([local.get(parents[v], -1) for v in feed], dtype=torch.long)
            out = self.backend.forward(self._held.cache, torch.tensor([tokens[v] for v in feed]), par)
            self._logits.update(zip(feed, out.logits))
            self._fed += feed
            self._fed_tokens += [tokens[v] for v in feed]
        return torch.stack([self._logits[v] for v in need])

    def compact(self, path: list[int]) -> None:
        """Keep the accepted path's cached nodes after the committed tokens; drop the rest."""
        pos = {v: i for i, v in enumerate(self._fed)}
        rows: list[int] = []
        for v in path:
            if v not in pos:
                break
            rows.append(pos[v])
        self.backend.keep(self._held.cache, self._n, rows)
        self._held.extended([self._fed_tokens[r] for r in rows])
        self._fed, self._fed_tokens, self._logits = [], [], {}


def _closure(parents: list[int], need: list[int]) -> list[int]:
    """The `need` nodes and all their ancestors, in topological (index) order."""
    out: set[int] = set()
    for v in need:
        while v >= 0 and v not in out:
            out.add(v)
            v = parents[v]
    return sorted(out)


def _reusable(fed: list[int], parents: list[int], want: list[int]) -> int:
    """Length of the longest prefix of the cached nodes that is a chain from the root and lies on
    the path of every wanted node not in it (so new nodes may attend to all of it)."""
    n = 0
    while n < len(fed) and parents[fed[n]] == (fed[n - 1] if n else -1):
        n += 1
    while n:
        chain = set(fed[:n])
        if all(v in chain or _descends(parents, v, fed[n - 1]) for v in want):
            return n
        n -= 1
    return 0


def _descends(parents: list[int], v: int, a: int) -> bool:
    while v >= 0:
        v = parents[v]
        if v == a:
            return True
    return False


# ------------------------------------------------------------------------------ drafters


class TreeMethod(Protocol):
    """How a multi-draft method grows its tree from the draft model and verifies it: the frozen
    settings dataclasses below (`SpecTr`, `RecursiveSD`, `DySpec`), each a pure builder."""

    @property
    def name(self) -> str: ...

    def build(self, root_logits: torch.Tensor, expand: Expand, ctx: DraftContext) -> Draft:
        """root_logits: [vocab], the draft model's logits after the committed tokens."""
        ...

    def verify(
        self, draft: Draft, target_logits: torch.Tensor, sampling: SamplingConfig, rng: torch.Generator
    ) -> VerifyResult:
        """target_logits: [len(draft) + 1, vocab]."""
        ...


@dataclass(frozen=True)
class SpecTr:
    """SpecTr: k chains of `depth` tokens drawn i.i.d. per step (k * depth nodes at most),
    verified by K-SEQ at every node of the walk."""

    name: ClassVar[str] = "spectr"
    k: int = 2
    depth: int = 4

    def __post_init__(self) -> None:
        _positive("spectr", k=self.k, depth=self.depth)

    def build(self, root_logits: torch.Tensor, expand: Expand, ctx: DraftContext) -> Draft:
        k = min(self.k, ctx.budget)
        depth = min(self.depth, max(1, ctx.budget // k))
        return iid_chains(root_logits, expand, k, depth, ctx.sampling, ctx.rng)

    def verify(
        self, draft: Draft, target_logits: torch.Tensor, sampling: SamplingConfig, rng: torch.Generator
    ) -> VerifyResult:
        return spectr_verify(draft, target_logits, sampling, rng)  # target_logits: [len(draft) + 1, vocab]


@dataclass(frozen=True)
class RecursiveSD:
    """Recursive SD, a tree drawn without replacement. method 'gumbel' (RSD-C): `branching`
    children per node at each level (default: `width` at every one of `depth` levels), cut at
    the node budget in level order. method 'beam' (RSD-S): stochastic beam search keeping
    `width` sequences per level for `depth` levels. Verified by recursive rejection sampling
    without replacement."""

    name: ClassVar[str] = "rsd"
    method: str = "gumbel"
    width: int = 2
    depth: int = 4
    branching: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.method not in ("gumbel", "beam"):
            raise OutpaceError(f"rsd method must be 'gumbel' or 'beam', got {self.method!r}")
        _positive("rsd", width=self.width, depth=self.depth)
        if any(b < 1 for b in self.branching):
            raise OutpaceError(f"rsd branching factors must be >= 1, got {list(self.branching)}")
        if self.branching and self.method == "beam":
            raise OutpaceError("rsd branching applies to method=gumbel; beam search uses width and depth")

    @property
    def levels(self) -> tuple[int, ...]:
        return self.branching or (self.width,) * self.depth

    def build(self, root_logits: torch.Tensor, expand: Expand, ctx: DraftContext) -> Draft:
        if self.method == "gumbel":
            return gumbel_tree(root_logits, expand, self.levels, ctx.budget, ctx.sampling, ctx.rng)
        width = min(self.width, ctx.budget)
        depth = min(self.depth, max(1, ctx.budget // width))
        return beam_tree(root_logits, expand, width, depth, ctx.sampling, ctx.rng)

    def verify(
        self, draft: Draft, target_logits: torch.Tensor, sampling: SamplingConfig, rng: torch.Generator
    ) -> VerifyResult:
        return rsd_verify(draft, target_logits, sampling, rng)  # target_logits: [len(draft) + 1, vocab]


@dataclass(frozen=True)
class DySpec:
    """DySpec: a dynamic tree grown greedily by the draft model's path probabilities, at most
    `budget` nodes (0: the decoder's per-step budget, --draft-length); siblings are drawn
    without replacement, so RSD's verifier applies."""

    name: ClassVar[str] = "dyspec"
    budget: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.budget, int) or self.budget < 0:
            raise OutpaceError(f"dyspec budget must be an integer >= 0 (0 = --draft-length), got {self.budget!r}")

    def build(self, root_logits: torch.Tensor, expand: Expand, ctx: DraftContext) -> Draft:
        budget = min(self.budget or ctx.budget, ctx.budget)
        return dynamic_tree(root_logits, expand, budget, ctx.sampling, ctx.rng)

    def verify(
        self, draft: Draft, target_logits: torch.Tensor, sampling: SamplingConfig, rng: torch.Generator
    ) -> VerifyResult:
        return rsd_verify(draft, target_logits, sampling, rng)  # target_logits: [len(draft) + 1, vocab]


def _positive(method: str, **values: int) -> None:
    for key, v in values.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise OutpaceError(f"{method} {key} must be an integer >= 1, got {v!r}")


class TreeDrafter:
    """A draft-model tree drafter: keeps the draft cache in step (`DraftCache`) and grows each
    step's tree with its `TreeMethod`, whose verifier the decoder then uses."""

    makes_trees = True

    def __init__(self, backend: Backend, method: TreeMethod) -> None:
        self.cache = DraftCache(backend)
        self.method = method
        self.name = method.name

    def start(self, prompt: Sequence[int]) -> None:
        self.cache.start(prompt)

    def propose(self, ctx: DraftContext) -> Draft:
        if ctx.budget <= 0:
            return Draft.empty()
        root = self.cache.sync(ctx.tokens)
        return self.method.build(root, self.cache.expand, ctx)

    def observe(self, draft: Draft, result: VerifyResult, target_logits: torch.Tensor) -> None:
        self.cache.compact(result.accepted)

    def verifier(
        self, draft: Draft, target_logits: torch.Tensor, sampling: SamplingConfig, rng: torch.Generator
    ) -> VerifyResult:
        """The method's verifier; target_logits: [len(draft) + 1, vocab]."""
        return self.method.verify(draft, target_logits, sampling, rng)


# ---------------------------------------------------------------- engine factories


def branching_factors(text: str) -> tuple[int, ...]:
    """'3-2-1' -> (3, 2, 1)."""
    try:
        out = tuple(int(b) for b in text.split("-"))
    except ValueError:
        raise OutpaceError(f"rsd branching must look like 3-2-1 (children per level), got {text!r}") from None
    if not out:
        raise OutpaceError("rsd branching is empty")
    return out


def _draft_backend(
    kind: str, arg: str, target: LoadedModel, dtype: str, loader: Loader, known: dict[str, Callable[[str], Any]]
) -> tuple[Backend, dict[str, Any]]:
    """Load the draft model named first in `arg`; parse the key=value options after it."""
    from outpace.engine import parse_options

    model, _, rest = arg.partition(",")
    if not model or "=" in model:
        raise OutpaceError(f"{kind} needs a draft model first: --drafter {kind}:qwen2.5-coder-0.5b[,key=value...]")
    opts = parse_options(rest, {**known, "quant": str})
    draft = loader(model, dtype, opts.pop("quant", None))
    check_same_tokenizer(target.tokenizer, draft.tokenizer, target.name, draft.name)
    return draft.backend, opts


def make_spectr(arg: str, target: LoadedModel, dtype: str, loader: Loader) -> TreeDrafter:
    """`spectr:MODEL[,k=2,depth=4,quant=int8]`."""
    backend, opts = _draft_backend("spectr", arg, target, dtype, loader, {"k": int, "depth": int})
    return TreeDrafter(backend, SpecTr(**opts))


def make_rsd(arg: str, target: LoadedModel, dtype: str, loader: Loader) -> TreeDrafter:
    """`rsd:MODEL[,method=gumbel|beam,width=2,depth=4,branching=3-2-1,quant=int8]`."""
    known: dict[str, Callable[[str], Any]] = {"method": str, "width": int, "depth": int, "branching": branching_factors}
    backend, opts = _draft_backend("rsd", arg, target, dtype, loader, known)
    return TreeDrafter(backend, RecursiveSD(**opts))


def make_dyspec(arg: str, target: LoadedModel, dtype: str, loader: Loader) -> TreeDrafter:
    """`dyspec:MODEL[,budget=N,quant=int8]`."""
    backend, opts = _draft_backend("dyspec", arg, target, dtype, loader, {"budget": int})
    return TreeDrafter(backend, DySpec(**opts))


#: Rows for `outpace.engine.DRAFTERS`.
DRAFTER_ROWS: dict[str, tuple[Callable[..., Any], str]] = {
    "spectr": (make_spectr, "spectr:MODEL[,k=2,depth=4,quant=int8|int4]"),
    "rsd": (make_rsd, "rsd:MODEL[,method=gumbel|beam,width=2,depth=4,branching=3-2-1,quant=int8|int4]"),
    "dyspec": (make_dyspec, "dyspec:MODEL[,budget=N,quant=int8|int4]"),
}
