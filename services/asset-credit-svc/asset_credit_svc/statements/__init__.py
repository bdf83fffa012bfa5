"""The channels' daily statements, reconciled against our provider orders."""
