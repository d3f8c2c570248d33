"""Language models behind one small interface (`LogitModel`) and the batched scorer that uses it."""
