"""Analysis tools: how close the implemented verifiers come to the best possible acceptance.

`optimal`: the optimal multi-draft acceptance through the dual of the optimal-transport problem
(Hu et al., "Towards Optimal Multi-draft Speculative Decoding", ICLR 2025), cross-checked by
brute force and by the primal LP. `verifiers`: the acceptance SpecInfer, SpecTr and Recursive SD
reach. `acceptance`: the table over many positions, from arrays or from a real model pair.
"""

from outpace.analysis.optimal import (
    Optimum,
    dual_brute_force,
    optimal_acceptance,
    primal_lp,
)

__all__ = ["Optimum", "dual_brute_force", "optimal_acceptance", "primal_lp"]
