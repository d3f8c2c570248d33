"""The paper's token-level bound (Lotfi et al. 2024, Theorem 1 + subsampling), with an honest delta split.

For a loss bounded in [a, a + Delta] and a hypothesis h with prior mass P(h), the Azuma-Hoeffding inequality
applied to the martingale differences E[l_i | x_<i] - l_i (each in an interval of length Delta), with a
union bound over hypotheses weighted by P(h), gives with probability >= 1 - delta1, for all h at once:

    R  <=  R_hat + Delta * sqrt((log 1/P(h) + ln 1/delta1) / (2 m))

where R = (1/m) sum_i E[l_i | x_<i] and R_hat = (1/m) sum_i l_i over the m tokens. R_hat is estimated
from s units drawn uniformly with replacement (fresh randomness, after h is fixed); Hoeffding's
inequality for their mean R_hat_s gives with probability >= 1 - delta2:

    R_hat  <=  R_hat_s + Delta * sqrt(ln(1/delta2) / (2 s))

Several statistics reported together (one per smoothing alpha, one per top-k) each get their own
(delta1, delta2), and the sum over all statistics of delta1 + delta2 is delta: every reported number
then holds simultaneously with probability >= 1 - delta. The original code split delta only over the two
terms and not over its 8 alphas; `tokenbounds.stats.bound.report_delta_split` does the whole split (with the
martingale share chosen in advance by `tokenbounds.stats.split`) and says how.

The bound itself (both terms, the subsampling UCB, the clipping) is assembled in one place for every method:
`tokenbounds.stats.bound.statistic_bound`, which uses `martingale_term` from here.
"""

import math


def martingale_term(delta_range: float, complexity_nats: float, m: int, delta1: float) -> float:
    """Delta * sqrt((log 1/P(h) + ln 1/delta1) / (2 m))."""
    if m < 1:
        raise ValueError("m must be >= 1")
    return delta_range * math.sqrt((complexity_nats + math.log(1.0 / delta1)) / (2.0 * m))
