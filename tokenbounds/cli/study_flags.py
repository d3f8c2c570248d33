"""The flags every study shares: its run directory, --resume, the extra bits it pays and its torch threads.

Each study's config dataclass inherits them (and calls this __post_init__ from its own), so they are declared once.
"""

from dataclasses import dataclass

from tokenbounds.config import flag
from tokenbounds.errors import UserError


@dataclass(frozen=True, kw_only=True)
class StudyFlags:
    out: str = flag(help="new run directory (or the one to --resume)", metavar="DIR")
    resume: bool = flag(False, help="finish the study in --out, skipping its finished rows")
    extra_bits: float = flag(
        0.0, help="bits for choices of yours made after seeing this corpus; log2(rows) is added on top"
    )
    threads: int = flag(1, help="torch CPU threads (1: the study is bit-identical when resumed with the same count)")

    def __post_init__(self):
        if self.threads < 1:
            raise UserError(f"--threads must be >= 1, got {self.threads}")
        if not self.extra_bits >= 0:
            raise UserError(f"--extra-bits must be >= 0, got {self.extra_bits}")
