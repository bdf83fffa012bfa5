"""Disputes by users and audited corrections by support (clause 7.1)."""
