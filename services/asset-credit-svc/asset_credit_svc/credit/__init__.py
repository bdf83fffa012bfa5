"""Credit scores (clause 6.3.4)."""
