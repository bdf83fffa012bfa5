"""Withdrawing the balance back to where it came from."""
