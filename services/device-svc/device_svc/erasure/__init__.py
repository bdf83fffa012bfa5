"""What device-svc forgets when a user deregisters (issue 15; docs/accounts.md "Erasure")."""
