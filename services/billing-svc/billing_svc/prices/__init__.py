"""The current price, shown before borrowing (GET /v1/pricing)."""
