"""``--backend onnxruntime``: our torch models exported once (:mod:`lightmatch.export.onnx`), cached by what the
graphs depend on (:func:`~lightmatch.models.onnx_backend.export_key`), and wrapped as the
:class:`~lightmatch.models.onnx_backend.OnnxExtractor` / :class:`~lightmatch.models.onnx_backend.OnnxMatcher` that
run them. It sits above both: the runtime wrappers know nothing of exporting."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

import torch

from ..errors import ConfigError
from ..models.base import Extractor, Matcher
from ..models.onnx_backend import BACKEND, OnnxExtractor, OnnxMatcher, cache_root, export_key
from ..runtime.onnx_runner import OnnxPipeline, import_onnxruntime
from .onnx import export_onnx, graph_type, refuse_extractor, refuse_matcher


def cached_export(extractor: Extractor, matcher: Matcher, root: Optional[Path] = None) -> Path:
    """The export folder of these models, made the first time (in a temporary folder renamed into place, so
    concurrent runs never see half an export)."""
    folder = (root or cache_root()) / export_key(extractor, matcher)
    if folder.is_dir():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=folder.parent))
    try:
        export_onnx(extractor, matcher, tmp)
        try:
            tmp.rename(folder)
        except OSError:  # another run finished the same export first
            if not folder.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def onnx_models(extractor: Extractor, matcher: Matcher, folder: Optional[str | os.PathLike] = None,
                providers: Optional[list[str]] = None) -> tuple[OnnxExtractor, OnnxMatcher]:
    """``extractor`` and ``matcher`` run by ONNX Runtime: from the export ``folder``, or from one made (and cached)
    now. The graphs use torch's CPU thread count."""
    import_onnxruntime()
    for reason in (refuse_extractor(extractor), refuse_matcher(matcher, "lightmatch")):
        if reason:
            raise ConfigError(f"--backend {BACKEND}: {reason}")
    path = Path(folder) if folder is not None else cached_export(extractor, matcher)
    pipeline = OnnxPipeline(path, providers, threads=torch.get_num_threads())
    return OnnxExtractor(extractor, pipeline, graph_type(extractor)), OnnxMatcher(matcher, pipeline)
