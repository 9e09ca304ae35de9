"""The sharded layout of an output store: data in immutable shard files, two small top-level files linking to it.

::

    OUTDIR/features.h5      top file: one HDF5 external link per image  -> shards/<shard>.h5:/features/<name>
    OUTDIR/matches.h5       top file: one group per first image, one external link per pair
                                                                         -> shards/<shard>.h5:/matches/<n0>/<n1>
    OUTDIR/shards/NNNNNNNN-<part>.h5   completed part files, renamed here (never copied), never modified again

hloc's unchanged ``get_matches`` (``hfile[pair]['matches0']``, trying both orders) and ``hfile[name]['keypoints']``
read the top files: h5py follows external links. A relative link is resolved against the top file's own folder
first (checked: not against the working directory), so the folder can be moved. Each top file also holds an
**index** (group :data:`~lightmatch.io.h5.INDEX_GROUP`): the shard list and, per image or pair, the shard
holding it, read in one call when a store opens (no walk over groups). The shards' root groups hold the settings.

**Truth and derived state.** The shards are the data; the top files are derived from them and can always be
rebuilt. A top file lists the shards it has applied; opening a store applies the shards it lacks (in shard order,
so a later shard's copy of an item wins). Shard numbers are assigned in rename order.

**Updating a top file without copying it, crash-safely.** A top file is never modified under its own name: a
reader always sees a complete one. Each top file has a *spare*, ``shards/.<top>.spare``: the previous generation,
a complete file (it was the top file until the last update). An update renames the spare to ``.<top>.work``,
appends the links and index rows of the shards it lacks (the last update's and this one's: O(new items), not
O(all)), fsyncs it, hard-links the current top file aside (it becomes the next spare) and renames the work file
over the top file. A new top file (the first, or a rebuild) is copied once to make the first spare. A kill
leaves at most a ``.work``/``.spare.tmp`` file, removed by the next run, which then copies the top file once to
make a new spare (the only O(all) step of an update, and only after a crash). A top file whose
shard list is not a prefix of the shards present (a shard dropped by ``store check --drop``) is rebuilt.
Why not append to the top file in place: HDF5 does not survive a kill in the middle of a metadata write, and the
top file is what readers open; why not copy it per update: at 1M pairs it is ~100 MB (the links), the O(all) cost
this layout removes. A reader that keeps a top file open across two later updates holds what has become the
spare: HDF5's file lock then refuses to open it for writing, and the update copies the top file instead, so the
reader's file never changes under it (with file locking disabled, e.g. ``HDF5_USE_FILE_LOCKING=FALSE``, it
could; hloc opens the file per read).

**HDF5 at this size.** Top files use new-style groups (``libver`` low bound ``v108``: dense link storage, so wide
groups stay fast); shards hold at most one chunk of items each. HDF5 opens a shard when an object in it is opened
and closes it when the object is closed, so readers never hold more than a few files open.

**Single-file stores** (the layout before shards: the data in ``features.h5``/``matches.h5`` themselves) are read
as they are. The first write hard-links such a file into ``shards/`` as shard 0 (no copy; its root is ``/``) and
then replaces the name with a top file linking into it, so nothing is lost and a kill in between is redone.
"""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path
from typing import Optional

import h5py
import numpy as np

from . import h5
from .atomic import fsync_dir
from .settings import compare_attrs

SHARDS_DIR = "shards"
LAYOUT_ATTR = "lightmatch_layout"
LAYOUT = "sharded-1"
LIBVER = ("v108", "latest")
KINDS = ("features", "matches")
LEGACY = "legacy"
CRASH_ENV = "LIGHTMATCH_CRASH_AT"


def crash_point(name: str) -> None:
    """Kill this process (SIGKILL) when ``LIGHTMATCH_CRASH_AT`` names this point: the crash-safety tests' hook."""
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def is_sharded(handle: h5py.File) -> bool:
    return h5.INDEX_GROUP in handle


def shard_names(folder: Path) -> list[str]:
    """Relative paths (``shards/NAME``) of the folder's shards, in shard order."""
    folder = Path(folder) / SHARDS_DIR
    if not folder.is_dir():
        return []
    return sorted(f"{SHARDS_DIR}/{p.name}" for p in folder.glob("[0-9]*.h5"))


def shard_root(handle: h5py.File, shard: str, kind: str) -> Optional[str]:
    """Group of ``shard`` holding items of ``kind``: ``/features`` or ``/matches`` in a part file, ``/`` in a
    single-file store hard-linked in as shard 0; None when it holds none."""
    if LEGACY in Path(shard).name:
        return "/" if Path(shard).name.endswith(f"-{kind}.h5") else None
    return f"/{kind}" if kind in handle else None


def applied_shards(path: Path) -> Optional[list[str]]:
    """The shard list of top file ``path``; None when it is missing, unreadable or not a top file."""
    try:
        with h5py.File(path, "r") as handle:
            if not is_sharded(handle):
                return None
            return [s.decode() if isinstance(s, bytes) else s for s in handle[h5.INDEX_GROUP]["shards"][()]]
    except (OSError, KeyError):
        return None


def _append(dataset: h5py.Dataset, values) -> None:
    values = np.asarray(values, dtype=dataset.dtype) if dataset.dtype.kind != "O" else values
    n = dataset.shape[0]
    dataset.resize(n + len(values), axis=0)
    dataset[n:] = values


def _new_index(handle: h5py.File, kind: str) -> None:
    group = handle.create_group(h5.INDEX_GROUP)
    text = h5py.string_dtype()
    group.create_dataset("shards", (0,), dtype=text, maxshape=(None,), chunks=(64,))
    group.create_dataset("names", (0,), dtype=text, maxshape=(None,), chunks=(1024,))
    if kind == "features":
        group.create_dataset("shard", (0,), dtype=np.int32, maxshape=(None,), chunks=(2048,))
    else:
        group.create_dataset("pairs", (0, 3), dtype=np.int32, maxshape=(None, 3), chunks=(2048, 3))


def _apply(handle: h5py.File, kind: str, folder: Path, shards: list[str], defaults: Optional[dict],
           features: Optional[set[str]]) -> None:
    """Add the links and index rows of ``shards`` to the open top file ``handle``. ``features``: the images (pair
    key spelling) whose features the store holds; a pair missing one is left out (the store's invariant)."""
    what = "extractor" if kind == "features" else "matcher"
    if h5.INDEX_GROUP not in handle:
        _new_index(handle, kind)
    index = handle[h5.INDEX_GROUP]
    names = [n.decode() if isinstance(n, bytes) else n for n in index["names"][()]] if kind == "matches" else []
    ids = {n: i for i, n in enumerate(names)}
    for number, shard in enumerate(shards):
        if number == 1:
            crash_point("index-append")
        sid = index["shards"].shape[0]
        _append(index["shards"], [shard])
        with h5py.File(folder / shard, "r") as part:
            root = shard_root(part, shard, kind)
            if root is None:
                continue
            group = part[root]
            keys = h5.feature_groups(group) if kind == "features" else h5.match_groups(group)
            if kind == "matches" and features is not None:
                keys = [k for k in keys if all(n in features for n in k.split("/"))]
            if not keys:
                continue
            source_attrs = dict(part.attrs if root == "/" else group.attrs)
            if not any(k.startswith("lightmatch_") and k != LAYOUT_ATTR for k in handle.attrs):
                for k, v in source_attrs.items():
                    if not k.startswith("lightmatch_part"):
                        handle.attrs[k] = v
            else:
                compare_attrs(folder / f"{kind}.h5", dict(handle.attrs), source_attrs, what, defaults,
                              source=folder / shard)
            prefix = "" if root == "/" else root
            for key in keys:
                if key in handle:
                    del handle[key]
                handle[key] = h5py.ExternalLink(shard, f"{prefix}/{key}")
        if kind == "features":
            _append(index["names"], keys)
            _append(index["shard"], np.full(len(keys), sid, np.int32))
            continue
        rows = np.empty((len(keys), 3), np.int32)
        new_names = []
        for row, key in enumerate(keys):
            n0, n1 = key.split("/")
            for n in (n0, n1):
                if n not in ids:
                    ids[n] = len(ids)
                    new_names.append(n)
            rows[row] = ids[n0], ids[n1], sid
        _append(index["names"], new_names)
        _append(index["pairs"], rows)


def _items(handle: h5py.File) -> int:
    index = handle[h5.INDEX_GROUP]
    return len(index["shard"] if "shard" in index else index["pairs"])


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def update_top(folder: Path, kind: str, defaults: Optional[dict] = None, rebuild: bool = False) -> None:
    """Bring ``folder/<kind>.h5`` up to date with the shards present (see the module docstring); ``rebuild``
    makes it afresh from all shards (after shards were dropped)."""
    folder = Path(folder)
    top = folder / f"{kind}.h5"
    wanted = shard_names(folder)
    current = applied_shards(top)
    if current == wanted and not rebuild:
        return
    shards_dir = folder / SHARDS_DIR
    work, spare = shards_dir / f".{kind}.h5.work", shards_dir / f".{kind}.h5.spare"
    spare_tmp = shards_dir / f".{kind}.h5.spare.tmp"
    work.unlink(missing_ok=True)
    spare_tmp.unlink(missing_ok=True)
    base: Optional[list[str]] = None
    if spare.exists() and not rebuild and not (top.exists() and os.path.samefile(spare, top)):
        listed = applied_shards(spare)
        if listed is not None and listed == wanted[:len(listed)]:
            os.replace(spare, work)
            base = listed
    spare.unlink(missing_ok=True)
    if base is None and not rebuild and current is not None and current == wanted[:len(current)]:
        shutil.copyfile(top, work)  # no usable spare: after a crash, or the first update of this top file
        base = current
    features = None
    if kind == "matches":
        if applied_shards(folder / "features.h5") is not None:
            with h5py.File(folder / "features.h5", "r") as handle:
                features = {n.replace("/", "-") for n in h5.feature_groups(handle)}
    try:
        try:
            handle = h5py.File(work, "r+" if base is not None else "w", libver=LIBVER)
        except OSError:
            if base is None or current is None or current != wanted[:len(current)]:
                raise
            # the spare is still open in a reader of an old generation (HDF5's file lock): use a copy of the top
            work.unlink(missing_ok=True)
            shutil.copyfile(top, work)
            base = current
            handle = h5py.File(work, "r+", libver=LIBVER)
        with handle:
            if base is None:
                handle.attrs[LAYOUT_ATTR] = LAYOUT
            _apply(handle, kind, folder, wanted[len(base or []):], defaults, features)
            empty = current is None and not _items(handle)
        if empty:  # no top file and nothing of this kind to link (e.g. features only): none is made
            work.unlink()
            return
        _fsync(work)
    except BaseException:
        work.unlink(missing_ok=True)
        raise
    if base is None:  # a new top file (O(all) anyway): its copy is the first spare
        shutil.copyfile(work, spare_tmp)
        _fsync(spare_tmp)
    elif current is not None:
        try:
            os.link(top, spare_tmp)
        except OSError:
            pass  # no hard links here: the next update copies the top file instead
    os.replace(work, top)
    fsync_dir(folder)
    crash_point("top-replace")
    if spare_tmp.exists():
        os.replace(spare_tmp, spare)
    fsync_dir(shards_dir)


def adopt_single_file(folder: Path, kind: str) -> None:
    """Hard-link a single-file ``<kind>.h5`` into the shards as shard 0 (no copy); :func:`update_top` then
    replaces the name with a top file. Nothing to do for a top file, a missing one, or one already adopted."""
    top = Path(folder) / f"{kind}.h5"
    if not top.exists() or applied_shards(top) is not None:
        return
    shard = Path(folder) / SHARDS_DIR / f"00000000-{LEGACY}-{kind}.h5"
    shard.parent.mkdir(exist_ok=True)
    if not shard.exists():
        try:
            os.link(top, shard)
        except OSError:
            shutil.copyfile(top, shard)  # a file system without hard links: the one copy of the upgrade
        fsync_dir(shard.parent)


def add_parts(folder: Path, parts: list[Path]) -> list[str]:
    """Rename completed part files into the shards (numbered after the last shard); returns the new shards."""
    shards_dir = Path(folder) / SHARDS_DIR
    shards_dir.mkdir(exist_ok=True)
    existing = shard_names(folder)
    number = int(Path(existing[-1]).name.split("-", 1)[0]) + 1 if existing else 1
    added = []
    for part in parts:
        target = shards_dir / f"{number:08d}-{part.name}"
        os.replace(part, target)
        added.append(f"{SHARDS_DIR}/{target.name}")
        number += 1
        if len(added) == 1:
            crash_point("shard-rename")
    fsync_dir(shards_dir)
    return added
