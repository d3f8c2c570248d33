"""Pure statistics (numpy/scipy only, never torch): every formula of a bound lives here, next to its
derivation."""
