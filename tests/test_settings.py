"""lightmatch.io.settings: what a store's attributes must match before anything is added to it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lightmatch.errors import ConfigError
from lightmatch.io.settings import compare_attrs, normalise_attrs


def test_attributes_compare_as_plain_values_and_a_difference_is_named():
    stored = {"lightmatch_extractor": b"aliked-n16", "lightmatch_resize": np.int64(1024),
              "lightmatch_extractor_settings": '{"max_keypoints": 2048, "nms": "reference"}',
              "lightmatch_part": 1, "lightmatch_device": "cuda", "other": "ignored"}
    wanted = {"lightmatch_extractor": "aliked-n16", "lightmatch_resize": 1024, "lightmatch_device": "cpu",
              "lightmatch_extractor_settings": {"nms": "reference", "max_keypoints": 2048}}
    assert normalise_attrs(stored) == {"lightmatch_extractor": "aliked-n16", "lightmatch_resize": 1024,
                                       "lightmatch_extractor_settings.max_keypoints": 2048,
                                       "lightmatch_extractor_settings.nms": "reference",
                                       "lightmatch_device": "cuda"}
    compare_attrs(Path("f.h5"), stored, wanted, "extractor", None)  # the device is recorded only
    other = {**wanted, "lightmatch_extractor_settings": {"nms": "strict", "max_keypoints": 2048}}
    with pytest.raises(ConfigError, match=r"f.h5 was made with other extractor settings \(nms: stored reference, "
                                          r"this run strict\)"):
        compare_attrs(Path("f.h5"), stored, other, "extractor", None)


def test_settings_recorded_later_are_compared_only_when_both_sides_have_them():
    old = {"lightmatch_matcher": "lightglue"}  # a store written before weights and precision were recorded
    new = {"lightmatch_matcher": "lightglue", "lightmatch_matcher_weights": "aliked_lightglue",
           "lightmatch_precision": "fp32", "lightmatch_verify": "none"}
    compare_attrs(Path("m.h5"), old, new, "matcher", {"lightmatch_verify": "none"})
    with pytest.raises(ConfigError, match=r"\(precision: stored fp32, this run bf16\)"):
        compare_attrs(Path("m.h5"), new, {**new, "lightmatch_precision": "bf16"}, "matcher", None)
    with pytest.raises(ConfigError, match=r"\(verify: stored none, this run "):
        compare_attrs(Path("m.h5"), old, {**new, "lightmatch_verify": '{"method": "homography"}'}, "matcher",
                      {"lightmatch_verify": "none"})
