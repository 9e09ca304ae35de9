"""Command-line interface: parse options, call one library function, print its result, map errors to exit codes.

Each module adds its commands to the ``main`` group of :mod:`.common`.
"""

from . import match  # noqa: F401  (registers commands)
from . import evaluate  # noqa: F401
from . import weights  # noqa: F401
from . import train  # noqa: F401
from . import reconstruct  # noqa: F401
from . import store  # noqa: F401
from .common import main

__all__ = ["main"]
