"""The coverage simulation: the shipped bound function run on simulated sources whose risk R is known exactly.

sources.py (Markov chains, predictors, sample paths, loss and top-k tables)  settings.py (the SETTINGS table)
harness.py (run_setting: the methods, the deliberately broken variants, the violation counts)  table.py (the
binomial allowance, the printed table). A part of the package like data/ or models/: it imports stats/ and
streams.py, and nothing imports it but scripts and tests.
"""
