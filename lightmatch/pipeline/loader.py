"""A prefetching image loader: decoding, EXIF, conversion and resizing in background threads, in a fixed order.

The batch pipeline knows in advance which images it will need and in which order (its *jobs*). The
:class:`PrefetchLoader` keeps up to ``prefetch`` of them decoding ahead of the consumer in a small thread pool,
so that decoding overlaps the network running in the main thread (OpenCV's decoders and torch's kernels release
the GIL, so threads are enough). Results come back in job order; a job that fails (missing, empty, truncated or
non-image file) comes back as the :class:`~lightmatch.errors.InputError` it raised instead of stopping the batch.

For extractors that use the standard :meth:`Extractor.extract <lightmatch.models.base.Extractor.extract>`, the
worker also does the colour conversion and the resize for the network (:func:`prepare_for_network`), and
:func:`extract_loaded` runs only the network in the main thread, with exactly the operations of ``extract`` (the
same features on the CPU). Extractors that override ``extract`` (SIFT) get the full-size tensor.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional, Sequence

import cv2
import kornia
import numpy as np
import torch

from ..errors import InputError
from ..io.images import image_to_tensor, read_image_bounded
from ..models.base import Extractor, resize_for_network, to_original_pixels
from ..types import Features

VIZ_LONG_SIDE = 1280  # images kept for match plots are shrunk to this long side


@dataclass
class LoadedImage:
    """An image decoded (and, for standard extractors, resized) by a worker.

    Attributes:
        name: the image's name (relative to the image root).
        image_size: ``(W, H)`` of the original image (after EXIF orientation).
        tensor: network input. When ``scale`` is set: ``(C, h, w)`` float32 already converted to the extractor's
            colour mode and resized to its ``resize``; otherwise the ``(C, H, W)`` original in [0, 1].
        scale: ``(sx, sy)`` network pixels per original pixel when ``tensor`` is prepared, else None.
        viz: the image shrunk to at most :data:`VIZ_LONG_SIDE` for match plots (None unless asked for).
        viz_scale: the shrink factor of ``viz`` (plot pixels per original pixel).
        decode_s: seconds the worker spent on this image.
        decode_scale: ``(sx, sy)`` decoded pixels per original pixel: below 1 when a huge image was reduced while
            decoding (:func:`~lightmatch.io.images.read_image_bounded`); ``scale`` already includes it.
    """

    name: str
    image_size: tuple[int, int]
    tensor: Optional[torch.Tensor]
    scale: Optional[tuple[float, float]] = None
    viz: Optional[np.ndarray] = None
    viz_scale: float = 1.0
    decode_s: float = 0.0
    decode_scale: tuple[float, float] = (1.0, 1.0)  # decoded pixels per original pixel (huge images: < 1)


def uses_standard_extract(extractor: Extractor) -> bool:
    """True when ``extractor`` keeps :meth:`Extractor.extract`, so its preprocessing can run in a worker."""
    return type(extractor).extract is Extractor.extract


@torch.inference_mode()
def prepare_for_network(image: torch.Tensor, extractor: Extractor) -> tuple[torch.Tensor, tuple[float, float]]:
    """The preprocessing of :meth:`Extractor.extract` on the CPU: colour mode, then resize to ``extractor.resize``.

    Returns the ``(C, h, w)`` network input and the scale ``(sx, sy)`` (network pixels per original pixel).
    """
    if extractor.grayscale and image.shape[0] == 3:
        image = kornia.color.rgb_to_grayscale(image[None])[0]
    elif not extractor.grayscale and image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    return resize_for_network(image, extractor.resize)


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
        tensor = image_to_tensor(array)
        if uses_standard_extract(extractor):
            tensor, scale = prepare_for_network(tensor, extractor)
            scale = (scale[0] * pre[0], scale[1] * pre[1])
    viz, viz_scale = shrink_for_viz(array) if keep_viz else (None, 1.0)
    return LoadedImage(name, (int(w), int(h)), tensor, scale, viz, viz_scale * pre[0],
                       time.perf_counter() - start, pre)


@torch.inference_mode()
def extract_loaded(extractor: Extractor, loaded: LoadedImage) -> Features:
    """Features of a :class:`LoadedImage`, in original-image pixels, on the extractor's device.

    For a prepared tensor this runs the rest of :meth:`Extractor.extract` (network, then mapping the keypoints
    back); otherwise it calls ``extractor.extract`` on the full-size tensor.
    """
    if loaded.tensor is None:
        raise ValueError(f"{loaded.name}: image was decoded without an extractor")
    if loaded.scale is None:
        feats = extractor.extract(loaded.tensor)
        if loaded.decode_scale == (1.0, 1.0):
            return feats
        sx, sy = loaded.decode_scale
        return replace(feats, keypoints=to_original_pixels(feats.keypoints, loaded.decode_scale),
                       scales=None if feats.scales is None else feats.scales / ((sx + sy) / 2),
                       image_size=loaded.image_size)
    kpts, scores, desc = extractor.detect_and_describe(loaded.tensor.to(extractor.device))
    return Features(
        keypoints=to_original_pixels(kpts.float(), loaded.scale).contiguous(),
        scores=scores.float().contiguous(),
        descriptors=desc.float().contiguous(),
        image_size=loaded.image_size,
    )


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
