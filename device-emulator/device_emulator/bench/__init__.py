"""The swarm benchmark (`python -m device_emulator.bench`, `make bench`); see run.py."""
