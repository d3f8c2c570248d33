"""The byte-level tokenizer: every UTF-8 byte is a token (ids 0..255) and 256 is the end-of-text token.

It has no parameters, so it depends on no data: a model over bytes is priced by its own message alone (a
tokenizer trained on the corpus would itself be part of the hypothesis and would have to be paid for).
`prepare --tokenizer bytes` uses it; V = 257 and log2 V = 8.006 bits per token is random guessing.
"""

EOT = 256


class ByteTokenizer:
    """The subset of the Hugging Face tokenizer interface that `prepare` uses."""

    eos_token_id = EOT
    name = "bytes"

    def __len__(self) -> int:
        return 257

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids) -> str:
        return bytes(int(i) for i in ids if int(i) != EOT).decode("utf-8", errors="replace")
