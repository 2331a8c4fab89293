"""Human operators as a runtime (CONTRACT §13, docs/operators.md)."""
