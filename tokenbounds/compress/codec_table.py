"""The codecs `size` and `bound --checkpoint-size` can price a checkpoint with, their default levels and level ranges.

Defined once, with no heavy imports, so that `size --help` lists them before torch is loaded.
"""

DEFAULT_CODECS = ("gzip", "xz", "zstd", "brotli")
DEFAULT_LEVELS = {"gzip": 6, "xz": 6, "xz-mt": 6, "zstd": 19, "brotli": 9}
LEVEL_RANGES = {"gzip": (1, 9), "xz": (0, 9), "xz-mt": (0, 9), "zstd": (1, 22), "brotli": (0, 11)}
