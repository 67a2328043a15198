"""netrace.train (work in progress)."""
