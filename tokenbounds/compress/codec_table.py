"""The codecs `size` and `bound --checkpoint-size` can price a checkpoint with, their default levels and level ranges,
and how a codec spec (NAME or NAME:LEVEL) is read.

Defined once, with no heavy imports, so that `size --help` lists them before torch is loaded.
"""

from tokenbounds.errors import UserError

DEFAULT_CODECS = ("gzip", "xz", "zstd", "brotli")
DEFAULT_LEVELS = {"gzip": 6, "xz": 6, "xz-mt": 6, "zstd": 19, "brotli": 9}
LEVEL_RANGES = {"gzip": (1, 9), "xz": (0, 9), "xz-mt": (0, 9), "zstd": (1, 22), "brotli": (0, 11)}


def parse_codec(spec: str) -> tuple[str, int]:
    """'zstd' -> ('zstd', 19); 'brotli:11' -> ('brotli', 11). UserError for an unknown codec or level."""
    name, _, level = spec.strip().partition(":")
    name = name.lower()
    if name == "zstd-mt":
        raise UserError(
            "codec zstd-mt: zstd already runs on all cores, and its bytes do not depend on the number of threads "
            "(zstd -19 = zstd -T0 -19), so it would be the same prior; use zstd"
        )
    if name not in DEFAULT_LEVELS:
        known = ", ".join(DEFAULT_LEVELS)
        raise UserError(f"unknown codec {spec!r}; use one of {known}, optionally as NAME:LEVEL")
    if not level:
        return name, DEFAULT_LEVELS[name]
    lo, hi = LEVEL_RANGES[name]
    if not level.isdigit() or not lo <= int(level) <= hi:
        raise UserError(f"codec {spec!r}: level must be an integer in [{lo}, {hi}]")
    return name, int(level)


def codec_label(name: str, level: int) -> str:
    return name if level == DEFAULT_LEVELS[name] else f"{name}:{level}"
