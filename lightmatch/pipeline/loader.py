"""A prefetching image loader: decoding, EXIF, conversion and resizing in background threads, in a fixed order.

The batch pipeline knows in advance which images it will need and in which order (its *jobs*). The
:class:`PrefetchLoader` keeps up to ``prefetch`` of them decoding ahead of the consumer in a small thread pool,
so that decoding overlaps the network running in the main thread (OpenCV's decoders and torch's kernels release
the GIL, so threads are enough). Results come back in job order; a job that fails (missing, empty, truncated or
non-image file) comes back as the :class:`~lightmatch.errors.InputError` it raised instead of stopping the batch.

The worker also runs the extractor's :meth:`~lightmatch.models.base.Extractor.preprocess` (colour conversion and
resize for the network), and :func:`extract_loaded` runs only :meth:`~lightmatch.models.base.Extractor.run` in the
main thread: together exactly ``extract`` (the same features on the CPU).
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import cv2
import numpy as np
import torch

from ..errors import InputError
from ..io.images import image_to_tensor, read_image_bounded
from ..models.base import Extractor
from ..types import Features

VIZ_LONG_SIDE = 1280  # images kept for match plots are shrunk to this long side


@dataclass
class LoadedImage:
    """An image decoded (and, for standard extractors, resized) by a worker.

    Attributes:
        name: the image's name (relative to the image root).
        image_size: ``(W, H)`` of the original image (after EXIF orientation).
        tensor: network input ``(C, h, w)``, the extractor's :meth:`preprocess` of the image (None when decoded
            without an extractor).
        scale: ``(sx, sy)`` network pixels per original pixel (None without an extractor); it includes the
            reduction of a huge image while decoding (:func:`~lightmatch.io.images.read_image_bounded`).
        viz: the image shrunk to at most :data:`VIZ_LONG_SIDE` for match plots (None unless asked for).
        viz_scale: the shrink factor of ``viz`` (plot pixels per original pixel).
        decode_s: seconds the worker spent on this image.
    """

    name: str
    image_size: tuple[int, int]
    tensor: Optional[torch.Tensor]
    scale: Optional[tuple[float, float]] = None
    viz: Optional[np.ndarray] = None
    viz_scale: float = 1.0
    decode_s: float = 0.0


def shrink_for_viz(array: np.ndarray, long_side: int = VIZ_LONG_SIDE) -> tuple[np.ndarray, float]:
    """``array`` shrunk (area interpolation) so its long side is at most ``long_side``, and the factor used."""
    h, w = array.shape[:2]
    factor = min(1.0, long_side / max(h, w))
    if factor >= 1.0:
        return array, 1.0
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    return cv2.resize(array, size, interpolation=cv2.INTER_AREA), factor


def load_for_extractor(path: str | Path, name: str, extractor: Optional[Extractor], keep_viz: bool = False,
                       ) -> LoadedImage:
    """Decode ``path`` and prepare it for ``extractor`` (None: decode only, e.g. for a plot).

    Raises :class:`InputError` for a missing, empty, undecodable or too small file.
    """
    start = time.perf_counter()
    bound = extractor.resize if extractor is not None else (VIZ_LONG_SIDE // 2 if keep_viz else None)
    array, (w, h) = read_image_bounded(path, bound)
    pre = (array.shape[1] / w, array.shape[0] / h)
    tensor, scale = None, None
    if extractor is not None:
        tensor, scale = extractor.preprocess(image_to_tensor(array))
        scale = (scale[0] * pre[0], scale[1] * pre[1])  # network pixels per original pixel
    viz, viz_scale = shrink_for_viz(array) if keep_viz else (None, 1.0)
    return LoadedImage(name, (int(w), int(h)), tensor, scale, viz, viz_scale * pre[0],
                       time.perf_counter() - start)


@torch.inference_mode()
def extract_loaded(extractor: Extractor, loaded: LoadedImage) -> Features:
    """Features of a :class:`LoadedImage` (the rest of :meth:`Extractor.extract`: :meth:`Extractor.run`), in
    original-image pixels, on the extractor's device."""
    if loaded.tensor is None or loaded.scale is None:
        raise ValueError(f"{loaded.name}: image was decoded without an extractor")
    return extractor.run(loaded.tensor, loaded.scale, loaded.image_size)


class PrefetchLoader:
    """Runs ``load(job)`` for each of ``jobs`` in ``workers`` threads, at most ``prefetch`` jobs ahead of the consumer.

    Use :meth:`get` with job indices in increasing order (:meth:`skip` for a job no longer wanted); each returns
    the job's result, or the :class:`InputError` it raised (other exceptions are wrapped in one). :meth:`close`
    (or leaving the ``with`` block) cancels what has not started.
    """

    def __init__(self, jobs: Sequence, load: Callable, workers: int = 2, prefetch: int = 8) -> None:
        self._jobs = list(jobs)
        self._load = load
        self._prefetch = max(1, int(prefetch))
        self._pool = ThreadPoolExecutor(max_workers=max(1, int(workers)), thread_name_prefix="lightmatch-loader")
        self._futures: dict[int, Future] = {}
        self._submitted = 0
        self._fill(0)

    def __len__(self) -> int:
        return len(self._jobs)

    def _fill(self, position: int) -> None:
        while self._submitted < len(self._jobs) and self._submitted < position + self._prefetch:
            i = self._submitted
            self._futures[i] = self._pool.submit(self._run, self._jobs[i])
            self._submitted += 1

    def _run(self, job):
        try:
            return self._load(job)
        except InputError as exc:
            return exc
        except Exception as exc:  # e.g. out of memory in a decoder: still one bad image, not a stopped batch
            return InputError(f"{job}: cannot load ({type(exc).__name__}: {exc})")

    def get(self, index: int):
        """The result of job ``index`` (blocking until ready), or the error it raised."""
        self._fill(index + 1)
        future = self._futures.pop(index)
        self._fill(index + 1)
        return future.result()

    def skip(self, index: int) -> None:
        """Drop job ``index`` without waiting for it."""
        self._fill(index + 1)
        future = self._futures.pop(index, None)
        if future is not None:
            future.cancel()

    def close(self) -> None:
        """Cancel pending jobs and let the running ones finish in the background."""
        for future in self._futures.values():
            future.cancel()
        self._futures.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> "PrefetchLoader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
