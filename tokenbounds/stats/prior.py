"""The prior: message length of the hypothesis, turned into log 1/P(h) in nats.

A hypothesis described by a C-bit message under a code fixed before seeing the data gets, through a
prefix-free code for the length followed by the message itself (Lotfi et al. 2024, eq. 2),

    log 1/P(h) <= (C + 2 * log2 C) * ln 2      nats.

Every choice made after seeing the data among K options (which codec, which quantization level, a
hyper-parameter grid) is paid for with a uniform prior over the options: extra_bits = log2 K, i.e.
ln K more nats.
"""

import math


def complexity_nats(message_bits: float, extra_bits: float = 0.0) -> float:
    """log 1/P(h) in nats for a message of `message_bits` bits plus `extra_bits` bits of choices."""
    if not message_bits > 0:
        raise ValueError(f"message bits must be > 0, got {message_bits}")
    if extra_bits < 0:
        raise ValueError(f"extra bits must be >= 0, got {extra_bits}")
    c = float(message_bits)
    # C + 2 log2 C is the prefix code length; for C < 1 the log term would be negative, so pay at least C.
    return (c + 2.0 * max(math.log2(c), 0.0) + float(extra_bits)) * math.log(2.0)


def choice_bits(n_options: int) -> float:
    """Bits paid for picking one of n_options after seeing the data: log2 n."""
    if n_options < 1:
        raise ValueError("need at least one option")
    return math.log2(n_options)
