"""PiCloud events."""
