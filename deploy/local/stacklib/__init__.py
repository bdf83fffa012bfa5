"""The local stack tool's parts (deploy/local/stack.py is its command line). Standard library only."""
