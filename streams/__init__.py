"""The stream side: the Faust app and settings, the agents and their batch lanes, dead letters and
redrive, metrics, the MSK adapter; the pure core in ``streams.core``, the command line in
``streams.cli``."""

__version__ = "0.3.0"
"""The package's version, its one place (pyproject.toml reads it; CHANGELOG.md names it)."""
