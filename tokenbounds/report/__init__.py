"""Reports: a readable table for the terminal, JSON for machines, markdown for notes."""
