"""The acceptance table: for every draft scheme and k, the optimal multi-draft acceptance and
what each implemented verifier reaches, averaged over positions, so the gap is a number.

Positions come from arrays (a .npz or .json with `p` and `q`, probabilities [n, vocab] or
[vocab], or `p_logits` and `q_logits` processed with the sampling settings) or from a real
target/draft pair on Spec-Bench prompts: the target continues each prompt autoregressively, then
both models score the continuation, and p and q at each continuation position are the processed
distributions (`outpace.sampling.probs`). The first level of a draft tree is what is measured.
"""

from __future__ import annotations

import importlib.resources
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from outpace.analysis.optimal import SCHEMES, optimal_acceptance
from outpace.analysis.verifiers import VERIFIERS, acceptance
from outpace.errors import OutpaceError
from outpace.sampling import SamplingConfig, make_rng, probs


@dataclass(frozen=True)
class Row:
    """One line of the table: means over the positions; errors are absolute bounds (optimum:
    quadrature) or standard errors (a Monte Carlo verifier)."""

    scheme: str
    k: int
    verifier: str
    optimal: float
    optimal_error: float
    acceptance: float
    acceptance_error: float
    method: str  # "exact" or "monte carlo"
    positions: int

    @property
    def gap(self) -> float:
        return self.optimal - self.acceptance


def acceptance_table(
    p: np.ndarray,  # [n, vocab] target distributions
    q: np.ndarray,  # [n, vocab] draft distributions
    ks: Sequence[int],
    schemes: Sequence[str] = SCHEMES,
    samples: int = 2000,
    seed: int = 0,
) -> list[Row]:
    """One row per (scheme, k, verifier lossless for that scheme)."""
    rng = make_rng(seed)
    rows = []
    for scheme in schemes:
        for k in ks:
            best = [optimal_acceptance(pi, qi, k, scheme) for pi, qi in zip(p, q)]
            for verifier in (v for v, s in VERIFIERS.items() if s == scheme):
                got = [acceptance(verifier, pi, qi, k, rng, samples) for pi, qi in zip(p, q)]
                n = len(got)
                rows.append(Row(
                    scheme, k, verifier,
                    optimal=sum(b.value for b in best) / n,
                    optimal_error=sum(b.error for b in best) / n,
                    acceptance=sum(g.value for g in got) / n,
                    acceptance_error=math.sqrt(sum(g.error**2 for g in got)) / n,
                    method="exact" if all(g.exact for g in got) else "monte carlo",
                    positions=n,
                ))
    return rows


def format_table(rows: Sequence[Row]) -> str:
    """A Markdown table."""
    out = [
        "| drafts | k | verifier | optimal acceptance | verifier acceptance | gap | how |",
        "|---|---:|---|---:|---:|---:|---|",
    ]
    for r in rows:
        opt = f"{r.optimal:.6f}" + (f" ± {r.optimal_error:.1e}" if r.optimal_error > 1e-12 else "")
        acc = f"{r.acceptance:.6f}" + (f" ± {r.acceptance_error:.1e}" if r.method != "exact" else "")
        scheme = "i.i.d. (with replacement)" if r.scheme == "with" else "without replacement"
        out.append(f"| {scheme} | {r.k} | {r.verifier} | {opt} | {acc} | {r.gap:.6f} | {r.method} |")
    return "\n".join(out)


def rows_json(rows: Sequence[Row]) -> list[dict[str, object]]:
    return [{**asdict(r), "gap": r.gap} for r in rows]


# ------------------------------------------------------------------------ inputs


def _as_matrix(a: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2 or a.shape[1] < 1:
        raise OutpaceError(f"{name} must be [vocab] or [positions, vocab], got shape {a.shape}")
    return a


def _normalised(a: np.ndarray, name: str) -> np.ndarray:
    if not np.isfinite(a).all() or (a < 0).any():
        raise OutpaceError(f"{name} must hold finite probabilities >= 0")
    sums = a.sum(1, keepdims=True)
    if (np.abs(sums - 1.0) > 1e-4).any():
        raise OutpaceError(f"each row of {name} must sum to 1 (found sums {sums.min():.6g} to {sums.max():.6g})")
    return a / sums


def load_arrays(path: Path, sampling: SamplingConfig) -> tuple[np.ndarray, np.ndarray]:
    """(p, q) [n, vocab] from a .npz or .json holding p and q (probabilities) or p_logits and
    q_logits (processed with `sampling`)."""
    try:
        if path.suffix == ".npz":
            with np.load(path) as f:
                data = {key: f[key] for key in f.files}
        elif path.suffix == ".json":
            data = {key: np.asarray(v, dtype=np.float64) for key, v in json.loads(path.read_text()).items()}
        else:
            raise OutpaceError(f"{path}: expected a .npz or .json file")
    except (OSError, ValueError) as err:
        raise OutpaceError(f"cannot read {path}: {err}") from None
    if "p" in data and "q" in data:
        p, q = _normalised(_as_matrix(data["p"], "p"), "p"), _normalised(_as_matrix(data["q"], "q"), "q")
    elif "p_logits" in data and "q_logits" in data:
        if sampling.greedy:
            raise OutpaceError("logits need a temperature > 0 (at 0 every distribution is one token)")
        p = probs(torch.from_numpy(_as_matrix(data["p_logits"], "p_logits")), sampling).double().numpy()
        q = probs(torch.from_numpy(_as_matrix(data["q_logits"], "q_logits")), sampling).double().numpy()
    else:
        raise OutpaceError(f"{path} must hold arrays p and q, or p_logits and q_logits (found {sorted(data)})")
    if p.shape != q.shape:
        raise OutpaceError(f"p and q have different shapes: {p.shape} and {q.shape}")
    return p, q


def spec_bench_prompts(n: int) -> list[str]:
    """The first user turns of the first n Spec-Bench questions, one per category in turn."""
    text = importlib.resources.files("outpace").joinpath("data/spec_bench/question.jsonl").read_text()
    by_cat: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.strip():
            item = json.loads(line)
            by_cat.setdefault(item["category"], []).append(item["turns"][0])
    out: list[str] = []
    while len(out) < n and any(by_cat.values()):
        for turns in by_cat.values():
            if turns and len(out) < n:
                out.append(turns.pop(0))
    return out


def model_pair(
    target: str, draft: str, prompts: int, tokens: int, sampling: SamplingConfig, dtype: str = "float32"
) -> tuple[np.ndarray, np.ndarray]:
    """(p, q) [prompts * tokens, vocab] at the positions of target-generated continuations."""
    from outpace.decoder import Decoder, GenerationConfig
    from outpace.drafters.draft_model import check_same_tokenizer
    from outpace.engine import load_cached

    if sampling.greedy:
        raise OutpaceError("the acceptance analysis needs a temperature > 0 (try --temperature 1)")
    tgt, drf = load_cached(target, dtype), load_cached(draft, dtype)
    check_same_tokenizer(tgt.tokenizer, drf.tokenizer, tgt.name, drf.name)
    decoder = Decoder(tgt.backend, tgt.tokenizer, eos_ids=tgt.eos_ids)
    ps: list[torch.Tensor] = []
    qs: list[torch.Tensor] = []
    for i, prompt in enumerate(spec_bench_prompts(prompts)):
        ids = decoder.encode([{"role": "user", "content": prompt}])
        cfg = GenerationConfig(max_new_tokens=tokens, sampling=SamplingConfig(
            sampling.temperature, sampling.top_k, sampling.top_p, (sampling.seed or 0) + i))
        cont = decoder.generate(ids, cfg).tokens
        if not cont:
            continue
        full = torch.tensor(ids + cont)
        rows = slice(len(ids) - 1, len(full) - 1)  # the positions that predict the continuation
        for backend, out in ((tgt.backend, ps), (drf.backend, qs)):
            out.append(probs(backend.forward(backend.new_cache(), full).logits[rows], sampling).double())
    if not ps:
        raise OutpaceError("the target generated nothing for these prompts")
    vocab = max(ps[0].shape[1], qs[0].shape[1])
    pad = lambda a: torch.nn.functional.pad(a, (0, vocab - a.shape[1]))
    return torch.cat([pad(a) for a in ps]).numpy(), torch.cat([pad(a) for a in qs]).numpy()
