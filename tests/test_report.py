"""lightmatch.eval.report: JSON-safe numbers, the report object and the files an evaluation writes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from lightmatch.errors import OutputError
from lightmatch.eval.report import EvalReport, finite, write_report


def test_finite_replaces_non_finite_numbers_at_any_depth():
    value = {"a": math.inf, "b": [1.5, -math.inf, (np.float32("nan"), np.int64(3))], "c": {"d": np.float32(2.5)},
             "e": "inf", "f": None, "g": True}
    out = finite(value)
    assert out == {"a": None, "b": [1.5, None, [None, 3]], "c": {"d": 2.5}, "e": "inf", "f": None, "g": True}
    assert type(out["b"][2][1]) is int and type(out["c"]["d"]) is float  # NumPy scalars become Python numbers
    json.dumps(out, allow_nan=False)  # strict JSON
    assert value["a"] == math.inf  # the input is left as it was


def test_to_json_merges_summary_settings_and_files():
    report = EvalReport({"auc@5": math.nan, "pairs": 2}, [{"pair": "a b"}], {"seed": 0}, {"plots": "viz"})
    assert report.to_json() == {"auc@5": None, "pairs": 2, "settings": {"seed": 0}, "files": {"plots": "viz"}}


def test_write_report(tmp_path):
    report = EvalReport({"auc@5": 12.5, "precision": math.inf}, [{"pair": "a b", "error": np.float32(1.5)},
                                                                 {"pair": "c d", "error": math.nan}],
                        {"seed": 1}, {"viz": str(tmp_path / "viz")})
    out = tmp_path / "new" / "folder"  # created
    files = write_report(report, out)
    assert files == {"results": str(out / "results.jsonl"), "summary": str(out / "summary.json")}
    lines = (out / "results.jsonl").read_text().splitlines()
    assert "NaN" not in lines[1]  # strict JSON: NumPy numbers and a failed pair's nan are written as numbers/null
    assert [json.loads(line) for line in lines] == [{"pair": "a b", "error": 1.5}, {"pair": "c d", "error": None}]
    summary = json.loads((out / "summary.json").read_text())
    assert summary == {"auc@5": 12.5, "precision": None, "settings": {"seed": 1},
                       "files": {"results": str(out / "results.jsonl"), "summary": str(out / "summary.json"),
                                 "viz": str(tmp_path / "viz")}}
    assert sorted(p.name for p in out.iterdir()) == ["results.jsonl", "summary.json"]  # no temporary file left


def test_write_report_with_no_pairs_and_an_unwritable_folder(tmp_path):
    write_report(EvalReport({}, []), tmp_path)
    assert (tmp_path / "results.jsonl").read_text() == ""
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match=f"{tmp_path / 'file'}: cannot write evaluation results here"):
        write_report(EvalReport({}, []), tmp_path / "file")
