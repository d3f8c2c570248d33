"""The quickstart's settings: the `quickstart` command's flags (tokenbounds.config) and its report's record.

No torch here, so `quickstart --help` answers at once; tokenbounds.quickstart runs the pipeline.
"""

from dataclasses import dataclass

from tokenbounds.config import flag
from tokenbounds.errors import UserError


@dataclass(frozen=True, kw_only=True)
class QuickstartConfig:
    out: str | None = flag(None, help="new output directory", metavar="DIR", default_text="runs/quickstart-<time>")
    json: str | None = flag(None, help="also write the JSON report here", metavar="OUT", default_text="not written")
    force: bool = flag(False, help="overwrite an existing --json file")
    n_layer: int = flag(4, help="transformer blocks", cli=False)
    n_head: int = flag(4, help="attention heads", cli=False)
    n_embd: int = flag(128, help="width of the residual stream", cli=False)
    context: int = flag(128, help="tokens of context", cli=False)
    lora_rank: int = flag(16, help="LoRA rank behind the projection", cli=False)
    subspace_dim: int = flag(10_000, help="d: trained numbers", metavar="D")
    steps: int = flag(1000, help="training steps", metavar="N")
    batch_size: int = flag(16, help="windows per step", cli=False)
    lr: float = flag(1e-2, help="peak learning rate of z", cli=False)
    warmup: int = flag(50, help="linear warmup steps", cli=False)
    levels: int = flag(16, help="quantization levels for z", metavar="L")
    samples: int = flag(4000, help="blocks sampled for the bound", metavar="S")
    # scored block length: every scored token sees >= context - stride tokens
    stride: int = flag(64, help="scored block length", cli=False)
    delta: float = flag(0.05, help="failure probability of the bound", cli=False)
    seed: int = flag(0, help="the one seed of every step (each step draws from its own stream of it)", cli=False)
    # log2 of the (at most 16) configurations the developers tried on this corpus
    extra_bits: float = flag(4.0, help="bits paid for the developers' choice of these settings", cli=False)
    progress: bool = flag(True, help="hide progress bars", name="--no-progress")

    def __post_init__(self):
        for name in ("steps", "subspace_dim", "levels", "samples"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
