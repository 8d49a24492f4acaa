"""Statistical losslessness checks shared by the verifier and decoder tests.

A chi-square goodness-of-fit test of observed token counts against the exact target
distribution. With ALPHA = 1e-4 a correct verifier fails a given test with probability 1e-4
(the stated false-failure rate); the runs are seeded, so a passing test stays passing.
"""

from __future__ import annotations

import numpy as np
from scipy import stats as sps

ALPHA = 1e-4


def chi_square_pvalue(counts: dict, expected_p: dict, n: int) -> float:
    """p-value of observed `counts` (key -> count) against probabilities `expected_p`.

    Cells with an expected count below 5 are pooled into one cell, as the test requires. A
    count in a cell of probability 0 gives p-value 0 (an impossible outcome was produced).
    """
    if any(c > 0 and expected_p.get(k, 0.0) <= 0.0 for k, c in counts.items()):
        return 0.0
    obs, exp = [], []
    pool_o = pool_e = 0.0
    for k, p in expected_p.items():
        e = n * p
        if e < 5:
            pool_o += counts.get(k, 0)
            pool_e += e
        else:
            obs.append(counts.get(k, 0))
            exp.append(e)
    if pool_e > 0:
        obs.append(pool_o)
        exp.append(pool_e)
    exp_arr = np.asarray(exp) * (sum(obs) / sum(exp))
    return float(sps.chisquare(obs, exp_arr).pvalue)
