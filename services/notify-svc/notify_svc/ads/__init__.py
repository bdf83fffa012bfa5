"""Advertisements: app banners and cabinet screens (6.3.7, 3.5)."""
