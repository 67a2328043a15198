"""netrace.models (work in progress)."""
