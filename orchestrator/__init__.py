"""Persona-driven Alexa interaction orchestrator for privacy research labs."""

from importlib import metadata

try:
    __version__ = metadata.version("echo-orchestrator")
except metadata.PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0+unknown"
