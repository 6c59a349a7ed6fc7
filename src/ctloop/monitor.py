"""monitor stage (being built)."""
