"""Evaluation: relative pose (SuperGlue's ``match_pairs.py --eval``) and homographies (glue-factory's HPatches).

* :mod:`.metrics`: pure functions of arrays (pose and homography errors, AUC, precision, matching score);
* :mod:`.pose_data`, :mod:`.homography_data`: pairs files with ground truth, HPatches, synthetic pairs;
* :mod:`.pose`, :mod:`.homography`: the pipelines, :func:`evaluate_pose` and :func:`evaluate_homography`, that run
  an extractor and a matcher (or read stores of an earlier run) over a dataset and summarise the metrics.

Latency is measured by :mod:`lightmatch.benchmark`.
"""

from .homography import HomographyEvalReport, evaluate_homography, format_homography_table
from .pose import PoseEvalReport, evaluate_pose, format_pose_table

__all__ = ["HomographyEvalReport", "PoseEvalReport", "evaluate_homography", "evaluate_pose",
           "format_homography_table", "format_pose_table"]
