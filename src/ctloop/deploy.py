"""deploy stage (being built)."""
