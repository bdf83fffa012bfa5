"""The shared service kit: one implementation of what every service repeats."""
