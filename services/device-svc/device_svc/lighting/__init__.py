"""Cabinets' night light (6.1.4): lit on request by a user about to scan, and between local sunset and
sunrise on a schedule, with an operator override."""
