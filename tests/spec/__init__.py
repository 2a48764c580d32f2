"""Second implementations written from docs/FORMAT.md alone, to prove the spec."""
