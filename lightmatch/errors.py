"""The one error family the library raises; the CLI turns it into a one-line message."""

from __future__ import annotations


class LightmatchError(Exception):
    """An error a user can act on. ``str(err)`` is a complete one-line message."""

    exit_code = 1


class InputError(LightmatchError):
    """A user-supplied file (image, pairs file, HDF5 store) is missing or invalid."""


class WeightsError(LightmatchError):
    """A weights file is missing, corrupt, or does not fit the model."""


class ConfigError(LightmatchError):
    """An option or combination of options that cannot work (e.g. no weights for a matcher/extractor pair)."""

    exit_code = 2


class OutputError(LightmatchError):
    """An output location cannot be written."""
