"""Priors from compression: how many bits it takes to describe a model.

- `codecs`: message length of checkpoint files under gzip (the paper's recipe), xz, zstd and brotli.
- `quantize`: quantize named tensors to a codebook of L levels (uniform bins or k-means).
- `coding`: arithmetic coding of the quantized symbols with their empirical frequencies (constriction).
- `message`: the self-describing, checksummed binary message that a decoder turns back into the weights.
- `model`: quantize a Hugging Face model directory or .gguf file into a loadable, priced directory; load it back.
- `qat`: optional quantization-aware refinement of the codebooks.

Units: every length here is in bits unless a name says bytes.
"""
