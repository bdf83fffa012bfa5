"""Firmware updates (issue 13): operators upload signed images and roll them out to a share of a model's
cabinets a few at a time; cabinets download them through signed, expiring links and report each stage;
a rollout halts when failures pass its threshold (docs/firmware.md)."""
