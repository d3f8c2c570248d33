"""The prior: message length of the hypothesis, turned into log 1/P(h) in nats.

A hypothesis is described by a message of C whole bits (C >= 1) under a code fixed before seeing the data. The
prior first codes the length C, with weight w(C) = 6 / (pi^2 C^2), then the message itself, uniformly among the 2^C
strings of that length:

    P(h) = w(C) 2^-C,    sum over all messages = sum_{C>=1} 2^C w(C) 2^-C = (6/pi^2) sum_{C>=1} 1/C^2 = 1

(the Basel sum), so the prior is a valid probability for every length the CLI accepts, and

    log2 1/P(h) = C + 2 log2 C + log2(pi^2 / 6)      (log2(pi^2/6) = 0.7237 bits).

Without the last term the weights 1/C^2 of Lotfi et al. (2024, eq. 2) sum to pi^2/6 > 1 over whole-bit lengths:
not a prior. A fractional C (`--message-bits 1234.5`) is rounded up to ceil(C) whole bits, the shortest whole-bit
message it can stand for.

Every choice made after seeing the data among K options (which codec, which quantization level, a hyper-parameter
grid) is paid for with a uniform prior over the options: extra_bits = log2 K, i.e. ln K more nats. A choice that
could have seen the subsample (the bound's sampled units) must also pay in the subsampling term (its delta divided
by K); the pipeline's delta split does that for the choices the prior says could have (`data_choice_bits`).
"""

import math
from dataclasses import dataclass, field, replace

LENGTH_CODE_NORMALISER_BITS = math.log2(math.pi**2 / 6.0)


def message_code_bits(message_bits: float) -> float:
    """log2 1/P(h) of a C-bit message under the length-prefixed code above: C + 2 log2 C + log2(pi^2/6), C whole."""
    if not (message_bits > 0 and math.isfinite(message_bits)):
        raise ValueError(f"message bits must be a finite number > 0, got {message_bits}")
    c = math.ceil(message_bits)
    return c + 2.0 * math.log2(c) + LENGTH_CODE_NORMALISER_BITS


def complexity_nats(message_bits: float, extra_bits: float = 0.0) -> float:
    """log 1/P(h) in nats for a message of `message_bits` bits plus `extra_bits` bits of choices."""
    if not (extra_bits >= 0 and math.isfinite(extra_bits)):
        raise ValueError(f"extra bits must be finite and >= 0, got {extra_bits}")
    return (message_code_bits(message_bits) + float(extra_bits)) * math.log(2.0)


def choice_bits(n_options: int) -> float:
    """Bits paid for picking one of n_options after seeing the data: log2 n."""
    if n_options < 1:
        raise ValueError("need at least one option")
    return math.log2(n_options)


@dataclass(frozen=True)
class Prior:
    """What a hypothesis costs: its message, the choices paid for, and where the numbers came from.

    extra_bits are all the bits of choices (paid in the martingale term, as ln 2 nats each); data_choice_bits are the
    part of them whose choices could have seen the bound's subsample, so the subsampling term's delta is divided by
    2^data_choice_bits too. `record` says where the message came from (codec and recipe, or the quantized message).
    """

    message_bits: float
    extra_bits: float = 0.0
    data_choice_bits: float = 0.0
    record: dict = field(default_factory=dict)

    def __post_init__(self):
        message_code_bits(self.message_bits)  # validates the length
        if not (0.0 <= self.data_choice_bits <= self.extra_bits and math.isfinite(self.extra_bits)):
            raise ValueError(f"need 0 <= data_choice_bits <= extra_bits < inf, got {self}")

    @property
    def complexity_nats(self) -> float:
        return complexity_nats(self.message_bits, self.extra_bits)

    def paying(self, bits: float, could_see_data: bool = True) -> "Prior":
        """This prior plus `bits` for one more choice (e.g. log2(rows) for reporting a study's best row)."""
        if not (bits >= 0 and math.isfinite(bits)):
            raise ValueError(f"choice bits must be finite and >= 0, got {bits}")
        seen = self.data_choice_bits + (bits if could_see_data else 0.0)
        return replace(self, extra_bits=self.extra_bits + bits, data_choice_bits=seen)

    def as_dict(self) -> dict:
        return {
            "message_bits": self.message_bits,
            "extra_bits": self.extra_bits,
            "data_choice_bits": self.data_choice_bits,
            "code_bits": message_code_bits(self.message_bits) + self.extra_bits,
            **self.record,
        }
