"""serve stage (being built)."""
