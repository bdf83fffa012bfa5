"""The operations console (issue 16): staff pages served by their own process beside the six services."""
