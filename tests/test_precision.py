"""lightmatch.precision: one resolution of --precision per device, one context applying it."""

import pytest
import torch

from lightmatch import precision as amp
from lightmatch.errors import ConfigError
from lightmatch.models.lightglue import LightGlue
from lightmatch.models.nearest_neighbor import NearestNeighborMatcher
from lightmatch.models.superglue import SuperGlue


def test_resolve_per_device():
    assert amp.resolve("fp32", "cuda", amp.AUTO_MATCHER) is None
    assert amp.resolve("bf16", "cpu") is torch.bfloat16
    assert amp.resolve("fp16", "cpu") is torch.float16
    assert amp.resolve("auto", "cpu", amp.AUTO_MATCHER) is None  # the reference's numbers on the CPU
    assert amp.resolve("auto", "cuda", amp.AUTO_MATCHER) is torch.float16
    assert amp.resolve("auto", "cuda") is None  # a model without a validated lower precision
    assert [amp.name(amp.resolve(p, "cpu")) for p in ("auto", "fp32", "fp16", "bf16")] == \
        ["fp32", "fp32", "fp16", "bf16"]


def test_unknown_precision_names_the_choices():
    with pytest.raises(ConfigError, match="choose auto, fp32, fp16, bf16"):
        amp.resolve("int8", "cpu")
    with pytest.raises(ConfigError, match="--precision 'auto': choose fp32, fp16"):
        amp.check("auto", ("fp32", "fp16"), "--precision")


def test_autocast_applies_the_dtype_or_nothing():
    with amp.autocast(torch.bfloat16, "cpu"):
        assert torch.is_autocast_enabled("cpu")
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with amp.autocast(None, "cpu"):
        assert not torch.is_autocast_enabled("cpu")


@pytest.mark.parametrize("make", [lambda p: LightGlue("aliked", precision=p, pretrained=False),
                                  lambda p: SuperGlue(precision=p, pretrained=False)])
def test_matchers_resolve_through_the_module(make):
    assert make("auto").run_precision(torch.device("cpu")) == "fp32"
    assert make("auto").run_precision(torch.device("cuda")) == "fp16"
    assert make("bf16").run_precision(torch.device("cpu")) == "bf16"
    assert NearestNeighborMatcher().run_precision(torch.device("cuda")) == "fp32"
