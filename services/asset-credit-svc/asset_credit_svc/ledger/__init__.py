"""The double-entry ledger: every movement of money is a transaction whose postings sum to zero."""
