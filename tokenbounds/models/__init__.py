"""Language models behind one small interface (`base.LogitModel`), opened through one backend registry
(`registry.open_model`: hf, tokenbounds-gpt, tokenbounds-quantized, quip-sharp), and the batched scorer that uses it."""
