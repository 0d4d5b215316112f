"""PiCloud: upload a Rhai script, get an HTTP endpoint."""

__version__ = "0.1.0"
