"""Priors from compression: how many bits it takes to describe a model.

- `codecs` (+ `compressor`, `codec_table`, `archive`): message length of checkpoint files under gzip (the paper's
  recipe), xz, xz-mt, zstd and brotli; `files` and `param_count`: what is priced and how many weights it holds.
- `pricing`: the prior's message bits and their record, for `bound`.
- `quantize`: quantize named tensors to a codebook of L levels (uniform bins or k-means).
- `coding`: arithmetic coding of the quantized symbols with their empirical frequencies (constriction).
- `message`: the self-describing, checksummed binary message that a decoder turns back into the weights.
- `source`, `model`, `quantized_dir`: what `quantize` reads, how it writes a loadable, priced directory, and how that
  directory is read back and verified.
- `qat`: optional quantization-aware refinement of the codebooks.

Units: every length here is in bits unless a name says bytes.
"""
