"""select stage (being built)."""
