"""tokenbounds: token-level generalization bounds for language models."""

__version__ = "0.1.0"
