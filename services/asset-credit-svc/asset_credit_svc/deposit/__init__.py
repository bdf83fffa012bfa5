"""The rental deposit: paid through a provider, refunded back to it."""
