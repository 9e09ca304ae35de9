"""Presets: plain data, filled in only where the user did not give the option."""

from __future__ import annotations

import pytest

from lightmatch.errors import ConfigError
from lightmatch.estimators import ESTIMATORS
from lightmatch.presets import PRESETS, apply_preset, apply_preset_split, get_preset


def test_apply_preset_fills_defaults_but_keeps_given_options():
    options = {"max_keypoints": None, "resize": 1024, "estimator": "opencv", "ransac_threshold": 1.0,
               "features": "disk", "rotation_search": False}
    out = apply_preset("indoor", options, given={"features"}, rename={"threshold": "ransac_threshold"})
    assert out["features"] == "disk"  # given by the user: kept
    assert out["max_keypoints"] == 2048 and out["resize"] == 640 and out["rotation_search"] is True
    assert out["estimator"] == "poselib" and out["ransac_threshold"] == 3.0
    # --no-rotation-search
    assert apply_preset("indoor", options, given={"rotation_search"})["rotation_search"] is False
    assert "depth_confidence" not in out and "threshold" not in out  # options the command lacks are skipped
    assert options["estimator"] == "opencv"  # the input is not changed
    assert apply_preset(None, options, given=set()) == options


def test_apply_preset_split_returns_model_options_and_settings_apart():
    opts, settings = apply_preset_split("outdoor", {"features": "disk", "max_keypoints": None},
                                        {"estimator": "opencv", "ransac_threshold": 1.0, "resize": None},
                                        given={"features"}, rename={"threshold": "ransac_threshold"})
    assert opts == {"features": "disk", "max_keypoints": 2048}
    assert list(settings.items()) == [("estimator", "poselib"), ("ransac_threshold", 1.0), ("resize", 1024)]


def test_presets_are_valid_and_described():
    for preset in PRESETS.values():
        assert preset.options["estimator"] in ESTIMATORS and preset.options["threshold"] > 0
        assert preset.describe().startswith(f"{preset.name}: ") and "estimator=poselib" in preset.describe()
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        get_preset("nope")
