"""Prediction smoothing and the range of the smoothed loss, in bits.

The smoothed predictor mixes the model with the uniform distribution over the V outputs:

    p_h(y | ctx) = (1 - alpha) * p_model(y | ctx) + alpha / V

so its loss l = -log2 p_h(x_i | ctx) lies in [a, a + Delta] with

    a         = -log2(1 - alpha + alpha / V)          (the model puts all its mass on x_i)
    a + Delta =  log2(V / alpha)                      (the model puts no mass on x_i)
    Delta     =  log2(1 + (1 - alpha) * V / alpha)

The loss is computed in log space, log p_h = logaddexp(log(1 - alpha) + log p, log(alpha / V)), so a
log-probability of -inf (or -1e30) still gives the finite upper end of the range.
"""

import numpy as np

LN2 = float(np.log(2.0))


def check_alpha(alpha: float) -> float:
    alpha = float(alpha)
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    return alpha


def loss_range(alpha: float, vocab_size: int) -> tuple[float, float]:
    """(a, Delta) in bits for smoothing weight alpha over vocab_size outputs."""
    alpha = check_alpha(alpha)
    if vocab_size < 2:
        raise ValueError(f"vocab_size must be >= 2, got {vocab_size}")
    a = -np.log2(1.0 - alpha + alpha / vocab_size)
    delta = np.log2(1.0 + (1.0 - alpha) * vocab_size / alpha)
    return float(a), float(delta)


def smoothed_bits(logp_nats: np.ndarray, alpha: float, vocab_size: int) -> np.ndarray:
    """Loss -log2 p_h(x_i) in bits from the model's natural-log probability of x_i."""
    alpha = check_alpha(alpha)
    logp = np.asarray(logp_nats, dtype=np.float64)
    mixed = np.logaddexp(np.log1p(-alpha) + logp, np.log(alpha / vocab_size))
    return -mixed / LN2
