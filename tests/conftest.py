"""Shared fixtures: the shared data folder (skipped when absent), the bundled sample, cached models."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "assets"


def shared_data_dir() -> Path | None:
    """``$LIGHTMATCH_SHARED_DATA`` or ``<repo>/../shared/data``, when it exists."""
    env = os.environ.get("LIGHTMATCH_SHARED_DATA")
    path = Path(env) if env else REPO.parent / "shared" / "data"
    return path if path.is_dir() else None


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--require-data", action="store_true", default=bool(os.environ.get("LIGHTMATCH_REQUIRE_DATA")),
                     help="fail, instead of skipping, the tests that need the shared data or a test extra (CI sets "
                          "LIGHTMATCH_REQUIRE_DATA=1)")


def require(config: pytest.Config, what: str) -> None:
    """Skip for ``what`` missing, or fail under ``--require-data`` (CI), so nothing skips silently there."""
    if config.getoption("--require-data"):
        pytest.fail(f"{what} (required: --require-data / LIGHTMATCH_REQUIRE_DATA)", pytrace=False)
    pytest.skip(what)


NOT_IN_CI = ("CUDA", "win32", "POSIX")  # skips CI may take: it has no GPU and runs on Linux


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under ``--require-data`` (CI), a skip for any other reason (missing data, a missing extra such as Ray,
    PoseLib or pycolmap) is a failure: nothing skips silently there."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail") and item.config.getoption("--require-data"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if not any(word in reason for word in NOT_IN_CI):
            report.outcome = "failed"
            report.longrepr = f"skipped under --require-data: {reason}"


@pytest.fixture(scope="session")
def shared_data(request) -> Path:
    path = shared_data_dir()
    if path is None:
        require(request.config, "shared data not found: set LIGHTMATCH_SHARED_DATA or place it at ../shared/data")
    return path


@pytest.fixture(scope="session")
def sample_pair() -> tuple[Path, Path, Path]:
    """The bundled sample: image 0, image 1 and the homography 0 -> 1."""
    return ASSETS / "sample0.jpg", ASSETS / "sample1.jpg", ASSETS / "sample_H.txt"


@functools.lru_cache(maxsize=None)
def cached_aliked(max_keypoints: int = 2048, detection_threshold: float = 0.2, resize: int = 1024,
                  nms: str = "reference"):
    """One ALIKED per configuration for the whole session (building it costs a weights load)."""
    from lightmatch.models.aliked import ALIKED

    return ALIKED(max_keypoints=max_keypoints, detection_threshold=detection_threshold, resize=resize, nms=nms)


@pytest.fixture(autouse=True)
def _grad_mode_untouched():
    """Tests run with autograd on, as a user's program does: the library's inference entry points choose their
    own mode (``torch.inference_mode``), and no test or library call may leave it switched off for the next."""
    import torch

    assert torch.is_grad_enabled(), "autograd was left disabled before this test"
    yield
    assert torch.is_grad_enabled(), "autograd left disabled"
