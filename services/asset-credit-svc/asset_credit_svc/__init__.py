"""asset-credit-svc: wallets, a double-entry ledger, top-ups and rental charges."""
