"""PiCloud workers."""
