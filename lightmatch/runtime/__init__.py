"""Runners that need no torch."""
