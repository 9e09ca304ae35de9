"""Default settings, in one place for the library and the CLI (no heavy imports: the CLI reads them to
build its help)."""

from __future__ import annotations

DEFAULT_RESIZE = 1024  # long side of the image given to the network
DEFAULT_MAX_KEYPOINTS = 2048
XFEAT_MAX_KEYPOINTS = 4096  # XFeat is trained and evaluated with more, weaker keypoints
NO_KEYPOINT_CAP = -1  # max_keypoints of every extractor: all detections above the threshold


def default_max_keypoints(features: str) -> int:
    """The keypoint budget of extractor ``features`` when none is given."""
    return XFEAT_MAX_KEYPOINTS if features == "xfeat" else DEFAULT_MAX_KEYPOINTS

VERIFY_MODEL = "homography"  # geometric verification of batch pairs (match --verify)
VERIFY_THRESHOLD_PX = 3.0
VERIFY_CONFIDENCE = 0.9999
VERIFY_SEED = 0
VERIFY_MAX_ITERS = 10000
VERIFY_ESTIMATOR = "magsac"  # OpenCV's MAGSAC++ (lightmatch.estimators)
VIZ_MAX_MATCHES = 300  # match lines drawn in a plot at most (all of them below)
BATCH_PAIRS = 1  # pairs matched together in a batch; padding does not pay on the CPU (docs/training.md)
NUM_MATCHED = 10  # retrieval: neighbours per image, the default K (measured: docs/reconstruction.md)
SEQUENTIAL_WINDOW = 5  # images after each image that sequential pairing pairs it with, by default
