"""PiCloud projections."""
