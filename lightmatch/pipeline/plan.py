"""Planning a batch: which pairs to run, which image to decode, extract or read back before each pair, and which
images to drop from memory after it (the future is known, so Belady's rule is optimal)."""

from __future__ import annotations

import heapq
from collections import defaultdict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence


@dataclass
class Job:
    """An image for the loader to decode: for extraction, or only for a plot."""

    name: str
    extract: bool

    def __str__(self) -> str:
        return self.name


@dataclass
class Load:
    name: str
    job: Optional[int]  # index into the loader's jobs, or None when only read back from the store
    extract: bool


@dataclass
class Step:
    name0: str
    name1: str
    loads: list[Load]
    evict: list[str]


def plan_pairs(pairs: Sequence[tuple[str, str]], has_features: Callable[[str], bool], decode_always: bool,
               capacity: int) -> tuple[list[Step], list[Job]]:
    """Schedule the loads of a list of distinct pairs (no self-pairs).

    Before each pair, its images not in the cache are loaded: extracted from a decoded image the first time when
    the store lacks them, otherwise read back (and decoded too when ``decode_always``, for plots). After each
    pair, images with no later pair are dropped, and while more than ``capacity`` are held, the one needed again
    furthest ahead (Belady's optimal rule; the future is known). Returns the steps and the decode jobs in order.
    """
    uses: dict[str, deque[int]] = defaultdict(deque)
    for i, (a, b) in enumerate(pairs):
        uses[a].append(i)
        uses[b].append(i)
    cached: set[str] = set()
    known: set[str] = set()
    heap: list[tuple[int, str]] = []
    steps: list[Step] = []
    jobs: list[Job] = []
    for a, b in pairs:
        loads = []
        for name in (a, b):
            if name in cached:
                continue
            extract = name not in known and not has_features(name)
            job = None
            if extract or decode_always:
                job = len(jobs)
                jobs.append(Job(name, extract))
            loads.append(Load(name, job, extract))
            cached.add(name)
            known.add(name)
        evict = []
        for name in (a, b):
            uses[name].popleft()
            if uses[name]:
                heapq.heappush(heap, (-uses[name][0], name))
            else:
                cached.discard(name)
                evict.append(name)
        while len(cached) > capacity and heap:
            neg_next, name = heapq.heappop(heap)
            if name in cached and uses[name] and uses[name][0] == -neg_next:
                cached.discard(name)
                evict.append(name)
        steps.append(Step(a, b, loads, evict))
    return steps, jobs


def unique_pairs(pairs: Iterable[tuple[str, str]]) -> tuple[list[tuple[str, str]], list[tuple[str, str, str]]]:
    """Pairs without self-pairs and repeats (in either order, first kept), and the dropped ones with a reason."""
    kept: list[tuple[str, str]] = []
    dropped: list[tuple[str, str, str]] = []
    seen: set[frozenset] = set()
    for a, b in pairs:
        if a == b:
            dropped.append((a, b, "an image paired with itself"))
            continue
        key = frozenset((a, b))
        if key in seen:
            dropped.append((a, b, "repeats an earlier pair"))
            continue
        seen.add(key)
        kept.append((a, b))
    return kept, dropped


def viz_filename(name0: str, name1: str) -> str:
    """Plot file name of a pair, as SuperGlue's demo: ``{name0}_{name1}_matches.png`` without extensions."""
    def stem(name: str) -> str:
        path = Path(name)
        return path.with_suffix("").as_posix().replace("/", "-") if path.suffix else name.replace("/", "-")

    return f"{stem(name0)}_{stem(name1)}_matches.png"
