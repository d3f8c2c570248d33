"""Token corpora on disk: preparing shards, reading them memory-mapped, and drawing the units a bound scores."""
