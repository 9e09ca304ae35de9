"""The models' settings contract: settings() is what stores record, num_layers the depth, overrides make new
models."""

import pytest

from lightmatch.errors import ConfigError
from lightmatch.models.lightglue import LightGlue
from lightmatch.models.nearest_neighbor import NearestNeighborMatcher
from lightmatch.models.superglue import SuperGlue
from lightmatch.pipeline.rotation import RotationSearchMatcher


def test_matcher_settings_and_depth():
    lg = LightGlue("aliked", depth_confidence=0.9, precision="bf16", pretrained=False)
    assert lg.settings() == {"depth_confidence": 0.9, "width_confidence": 0.99, "filter_threshold": 0.1,
                             "precision": "bf16"}
    assert lg.num_layers == 9 and SuperGlue(pretrained=False).num_layers == 18
    nn = NearestNeighborMatcher(ratio_threshold=0.8)
    assert nn.settings() == {"ratio_threshold": 0.8} and nn.num_layers is None  # unset settings are not recorded
    search = RotationSearchMatcher(lg)
    assert search.settings() == lg.settings() and search.num_layers == 9 and search.run_precision() == "bf16"


def test_overrides_make_a_new_matcher():
    lg = LightGlue("aliked", pretrained=False)
    full = lg.with_settings(depth_confidence=-1.0, width_confidence=-1.0)
    assert full.settings()["depth_confidence"] == -1.0 and lg.settings()["depth_confidence"] == 0.95
    assert full.transformers is lg.transformers  # the same weights
    with pytest.raises(ConfigError, match="no setting sinkhorn_iterations"):
        lg.with_settings(sinkhorn_iterations=3)
    search = RotationSearchMatcher(lg).with_settings(filter_threshold=0.5)
    assert search.settings()["filter_threshold"] == 0.5 and lg.settings()["filter_threshold"] == 0.1
