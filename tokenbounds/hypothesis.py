"""What a bound is computed for: a model, the context rule it is evaluated under, its prior and its compute dtype.

A report describes one `Hypothesis`; each smoothing alpha then makes one member of the report's family,
p_h = (1 - alpha) p_model + alpha / V, and each top-k one more statistic of the same model.

`open_hypothesis` fixes all of it before a single token is scored: the model is opened through the backend registry
(a quantized directory's backend decodes and verifies its message once: the weights evaluated are the message's, and
the verified manifest prices it), the rule is checked against the model and the corpus, and the prior is priced
(`price`).
"""

import sys
from dataclasses import dataclass

from tokenbounds.compress.pricing import checkpoint_message_bits, quantized_message_bits
from tokenbounds.data.shards import Corpus
from tokenbounds.data.units import ContextRule
from tokenbounds.errors import UserError
from tokenbounds.models.base import LogitModel, check_device, cpu_has_fast_bf16
from tokenbounds.models.registry import Backend, backend_for, open_model
from tokenbounds.request import BoundRequest
from tokenbounds.stats.prior import Prior

SMOOTHING = "p_h = (1 - alpha) p_model + alpha / V, one hypothesis per alpha"


@dataclass(frozen=True)
class Hypothesis:
    model: LogitModel
    rule: ContextRule
    prior: Prior
    compute_dtype_choice: dict  # what was asked (auto, or a dtype), the dtype that runs, and why

    @property
    def compute_dtype(self) -> str:
        """The dtype the forward pass runs in: float32 or bfloat16."""
        return self.compute_dtype_choice["resolved"]

    def describe(self) -> dict:
        """The report's "hypothesis": the model's one description schema, the smoothing and the context rule."""
        extra = {
            "smoothing": SMOOTHING,
            "context_rule": self.rule.as_dict(),
            "compute_dtype_choice": self.compute_dtype_choice,
        }
        return {**self.model.describe(), **extra}


def resolve_compute_dtype(requested: str, device: str, backend: Backend) -> tuple[str, str]:
    """(the dtype to run, why). "auto" picks bfloat16 only where it is fast and the backend honours it."""
    if requested != "auto":
        if (
            requested == "bfloat16"
            and device == "cpu"
            and not cpu_has_fast_bf16()
            and requested in backend.compute_dtypes
        ):
            print(
                "tokenbounds bound: warning: this CPU has no native bfloat16 (AMX / AVX512-BF16): --compute-dtype "
                "bfloat16 is exact as asked but can be many times slower than float32 here",
                file=sys.stderr,
            )
        return requested, "as asked (--compute-dtype)"
    if "bfloat16" not in backend.compute_dtypes:
        return "float32", f"a {backend.label} runs in float32 only"
    if device != "cpu":
        return "bfloat16", f"auto: bfloat16 on {device}"
    if cpu_has_fast_bf16():
        return "bfloat16", "auto: this CPU multiplies bfloat16 natively (AMX / AVX512-BF16)"
    return "float32", "auto: this CPU has no native bfloat16 (AMX / AVX512-BF16), where float32 is faster"


def open_hypothesis(req: BoundRequest, rule: ContextRule, corpus: Corpus) -> Hypothesis:
    """Open, check and price the hypothesis `req` names, for scoring `corpus` under `rule`."""
    if req.quip_sharp is None:  # a quip-sharp worker runs its own torch and checks the device there
        check_device(req.device)
    dtype, why = resolve_compute_dtype(req.compute_dtype, req.device, backend_for(req.model))
    model = open_model(req.model, dtype, req.device, quip_sharp=req.quip_sharp, quip_python=req.quip_python)
    corpus.check_vocab(model.vocab_size, progress=req.progress)  # a raw file is scanned here
    rule.check(corpus, model.max_positions)
    choice = {"requested": req.compute_dtype, "resolved": dtype, "why": why}
    # A quantized directory's backend decoded and verified its message: the prior prices that very message.
    return Hypothesis(model, rule, price(req, getattr(model, "verified_manifest", None)), choice)


def price(req: BoundRequest, manifest: dict | None) -> Prior:
    """The prior, fixed before any token is scored.

    A quantized directory (its manifest already verified by `load_quantized`: message, config and weights agree)
    prices itself. `--message-bits` for such a directory may only claim a message at least as long as its own
    verified one (a shorter claim is a description nobody has shown to exist), and never drops the extra bits the
    manifest requires. Extra bits the prior requires (log2 of the codecs tried, or of the quantization
    configurations declared) are added to the user's --extra-bits.

    `data_choice_bits` counts the bits of choices that could have seen the data, the bound's subsample included: the
    user's --extra-bits and a manifest's configurations tried. The delta split divides the subsampling term's delta
    by 2^data_choice_bits for them. The choice among codecs is not counted there: it looks only at the checkpoint's
    compressed sizes, which do not depend on the data.
    """
    if manifest is not None:
        bits, info = quantized_message_bits(req.model, manifest)
        if req.message_bits is not None:
            if req.message_bits < bits:
                raise UserError(
                    f"--message-bits {req.message_bits:g} is shorter than this quantized directory's own verified "
                    f"message ({bits:,.0f} bits); give at least that, or leave --message-bits out"
                )
            info = {**info, "source": "--message-bits (checked against the quantized message)", "verified_bits": bits}
            bits = float(req.message_bits)
        extra = req.extra_bits + info["required_extra_bits"]
        return Prior(bits, extra, extra, {**info, "user_extra_bits": req.extra_bits})
    if req.message_bits is not None:
        record = {"source": "--message-bits", "user_extra_bits": req.extra_bits}
        return Prior(float(req.message_bits), req.extra_bits, req.extra_bits, record)
    if not req.checkpoint_size:
        raise UserError("give the prior: --message-bits N, or --checkpoint-size to price the checkpoint file(s)")
    bits, info = checkpoint_message_bits(req.model, progress=req.progress, codecs=req.codecs)
    extra = req.extra_bits + info["required_extra_bits"]
    return Prior(bits, extra, req.extra_bits, {**info, "user_extra_bits": req.extra_bits})
