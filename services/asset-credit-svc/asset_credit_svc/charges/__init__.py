"""Collecting rental fees that billing asks for."""
