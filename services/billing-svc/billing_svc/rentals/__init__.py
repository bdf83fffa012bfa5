"""Rentals: borrow, the device outcome, return, and the charge."""
