"""A user's wallet: the balance account and its history."""
