"""lightmatch: feature extraction and matching from the command line and from Python.

    >>> import lightmatch
    >>> extractor = lightmatch.load_extractor("aliked", max_keypoints=2048)
    >>> matcher = lightmatch.load_matcher("lightglue", features="aliked")
    >>> result = lightmatch.match_pair("a.jpg", "b.jpg", extractor, matcher, output_dir="out")
    >>> result.matches.pairs()  # (M, 2) indices into result.features0 / features1 keypoints
"""

from .errors import LightmatchError
from .io.images import load_image
from .models.base import Extractor, Matcher
from .models.factory import load_extractor, load_matcher, resolve_device
from .pipeline.match import PairResult, match_pair
from .types import Features, Matches

__version__ = "0.1.0"

__all__ = [
    "Extractor",
    "Features",
    "LightmatchError",
    "Matcher",
    "Matches",
    "PairResult",
    "load_extractor",
    "load_image",
    "load_matcher",
    "match_pair",
    "resolve_device",
]
