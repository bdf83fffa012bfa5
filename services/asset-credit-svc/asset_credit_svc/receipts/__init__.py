"""Receipts for users: what an invoice provider needs about a paid rental or a top-up."""
