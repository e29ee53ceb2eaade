"""The version string, single source."""

__version__ = "0.1.0"
