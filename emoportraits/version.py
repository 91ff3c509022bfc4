"""The package version, read by the package and the release card (pyproject.toml states the same)."""
__version__ = "0.1.0"
