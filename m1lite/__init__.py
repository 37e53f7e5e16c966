"""m1lite: a small self-hosted event capture server with a MinusOneDB-compatible API."""

__version__ = "0.1.0"
