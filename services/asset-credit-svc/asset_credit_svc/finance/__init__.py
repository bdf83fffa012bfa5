"""Finance reports straight from the double-entry ledger."""
