"""Command-line interface: parse options, call one library function, print its result, map errors to exit codes.

Each module adds its commands to the ``main`` group of :mod:`.common`.
"""

from . import (
    evaluate,  # noqa: F401
    export_onnx,  # noqa: F401  (registers `export onnx` on the group of .match)
    match,  # noqa: F401  (registers commands)
    reconstruct,  # noqa: F401
    store,  # noqa: F401
    train,  # noqa: F401
    weights,  # noqa: F401
)
from .common import main

__all__ = ["main"]
