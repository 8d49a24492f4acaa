"""Cost profiles: what a decoding step costs on some hardware, for projected speedups.

Format (JSON; `outpace bench profile` writes one measured on this machine)::

    {
      "name": "gpu-like",                 # shown in the report's column title
      "verify_ms": {"1": 20, "4": 20, "16": 21},   # one target forward over k tokens
      "draft_ms_per_token": 2,            # one draft-model forward (per drafted token)
      "ar_ms": 20                         # one autoregressive step (default: verify_ms at k=1)
    }

Any extra keys (for example ``"measured"``, the settings of a measurement) are kept and
ignored. Missing k are interpolated linearly between the given ones; below the smallest k the
smallest k's cost is used, above the largest the line through the last two points is extended
(flat when only one k is given).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from outpace.errors import OutpaceError


@dataclass(frozen=True)
class CostProfile:
    """Per-step costs in milliseconds (see the module docstring for the JSON format)."""

    name: str
    verify_ms: tuple[tuple[int, float], ...]  # (k, ms), sorted by k
    draft_ms_per_token: float
    ar_ms: float
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.verify_ms:
            raise OutpaceError("cost profile: verify_ms needs at least one entry")
        ks = [k for k, _ in self.verify_ms]
        if ks != sorted(set(ks)) or ks[0] < 1:
            raise OutpaceError(f"cost profile: verify_ms keys must be distinct integers >= 1, got {ks}")
        for what, value in [*((f"verify_ms[{k}]", v) for k, v in self.verify_ms),
                            ("draft_ms_per_token", self.draft_ms_per_token), ("ar_ms", self.ar_ms)]:
            if not math.isfinite(value) or value < 0:
                raise OutpaceError(f"cost profile: {what} must be a finite number >= 0, got {value!r}")
        if self.ar_ms <= 0:
            raise OutpaceError("cost profile: ar_ms must be > 0")

    def verify_cost(self, k: int) -> float:
        """Milliseconds to verify k tokens (root included), interpolated."""
        return interpolate(self.verify_ms, k)

    @classmethod
    def from_json(cls, data: Any) -> CostProfile:
        if not isinstance(data, Mapping):
            raise OutpaceError("cost profile must be a JSON object")
        try:
            raw = data["verify_ms"]
            verify = tuple(sorted((int(k), float(v)) for k, v in dict(raw).items()))
            draft = float(data.get("draft_ms_per_token", 0.0))
            ar = float(data["ar_ms"]) if data.get("ar_ms") is not None else None
        except KeyError as err:
            raise OutpaceError(f"cost profile lacks {err.args[0]!r}") from None
        except (TypeError, ValueError) as err:
            raise OutpaceError(f"cost profile: bad number ({err})") from None
        name = str(data.get("name", "profile"))
        extra = {k: v for k, v in data.items() if k not in ("name", "verify_ms", "draft_ms_per_token", "ar_ms")}
        if not verify:
            raise OutpaceError("cost profile: verify_ms needs at least one entry")
        return cls(name, verify, draft, ar if ar is not None else interpolate(verify, 1), extra)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "verify_ms": {str(k): v for k, v in self.verify_ms},
            "draft_ms_per_token": self.draft_ms_per_token,
            "ar_ms": self.ar_ms,
            **self.extra,
        }


def interpolate(points: tuple[tuple[int, float], ...], k: int) -> float:
    """Piecewise-linear cost at k through sorted (k, ms) points; see the module docstring."""
    ks = [p[0] for p in points]
    if k <= ks[0]:
        return points[0][1]
    i = bisect.bisect_left(ks, k)
    if i < len(ks) and ks[i] == k:
        return points[i][1]
    if i == len(ks):
        if len(points) == 1:
            return points[0][1]
        (k0, y0), (k1, y1) = points[-2], points[-1]
    else:
        (k0, y0), (k1, y1) = points[i - 1], points[i]
    return max(0.0, y0 + (y1 - y0) * (k - k0) / (k1 - k0))
