"""``export colmap`` of a store without verified matches warns, in one line naming ``--verify``: pycolmap's mapping
uses verified two-view geometries only."""

from __future__ import annotations

import shlex

from click.testing import CliRunner
from helpers import make_images

from lightmatch.cli import main

FAST = "--features sift --matcher nn --resize -1 --max-keypoints 200 -q"


def test_export_of_unverified_matches_warns(tmp_path):
    make_images(tmp_path / "imgs", 3)
    runner = CliRunner()
    for folder, verify in (("raw", ""), ("verified", "--verify fundamental")):
        result = runner.invoke(main, shlex.split(f"match --image-dir {tmp_path}/imgs --pairs-mode exhaustive "
                                                 f"-o {tmp_path}/{folder} {FAST} {verify}"))
        assert result.exit_code == 0, result.output
    export = ("export colmap --image-dir {0}/imgs --features {0}/{1}/features.h5 --matches {0}/{1}/matches.h5 "
              "--database {0}/{1}/db.db")
    raw = runner.invoke(main, shlex.split(export.format(tmp_path, "raw")))
    assert raw.exit_code == 0, raw.output
    lines = raw.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lightmatch: warning: 3 of 3 pairs are not verified")
    assert "--verify" in lines[0] and "pycolmap" in lines[0]
    verified = runner.invoke(main, shlex.split(export.format(tmp_path, "verified")))
    assert verified.exit_code == 0 and verified.stderr == "", verified.stderr
