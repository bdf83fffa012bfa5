"""Refunds billing asks for (support corrections)."""
