"""PiCloud ingress."""
