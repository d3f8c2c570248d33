"""Studies: grids of (hypothesis, data, bound configuration) rows run by one resumable runner (runner.py).

compression.py is the first study (`tokenbounds study compression`): bounds of trained GPTs against training time,
subspace dimension, parametrization and quantization levels; its sizes live in compression_sizes.py.
"""
