"""Retrieval pairs: exact top-K against brute force and its memory, VLAD and its codebook file, hloc's
global-feats.h5, pair rules, recall on a mixed folder of the shared data, and the ``pairs`` / ``match`` options."""

from __future__ import annotations

import tracemalloc

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from helpers import make_images

from lightmatch.cli import main
from lightmatch.errors import ConfigError, InputError
from lightmatch.io.pairs import read_pairs
from lightmatch.retrieval.pairs import merge_pairs, pairs_from_neighbours, retrieval_pairs
from lightmatch.retrieval.store import read_global, write_global
from lightmatch.retrieval.topk import brute_force_top_k, chunk_sizes, top_k
from lightmatch.retrieval.vlad import Codebook, train_codebook, vlad

MODEL = ["--resize", "320", "--max-keypoints", "256"]  # ALIKED, the default extractor


# ------------------------------------------------------------------------------------------------- top-K ---

@pytest.mark.parametrize("n, m, k, same", [(700, 700, 5, True), (300, 900, 7, False), (40, 40, 39, True),
                                           (3, 10, 20, False)])
def test_top_k_equals_brute_force(n, m, k, same):
    rng = np.random.default_rng(n + m)
    q = rng.standard_normal((n, 24)).astype(np.float32)
    db = q if same else rng.standard_normal((m, 24)).astype(np.float32)
    want_i, want_s = brute_force_top_k(q, db, k, exclude_self=same)
    for block in (1000, 1 << 22):  # many small blocks (diagonal across block edges), and one block
        got_i, got_s = top_k(q, db, k, exclude_self=same, block=block)
        assert np.array_equal(got_i, want_i) and np.allclose(got_s, want_s, atol=1e-5)
    if same:
        assert not (got_i == np.arange(n)[:, None]).any()


def test_top_k_faiss_agrees():
    pytest.importorskip("faiss", reason="faiss (test extra) is needed for the faiss backend")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((500, 32)).astype(np.float32)
    assert np.array_equal(top_k(x, x, 6, exclude_self=True, backend="faiss")[0],
                          top_k(x, x, 6, exclude_self=True)[0])


def test_top_k_memory_is_n_times_k():
    """10k vectors: the score matrix would be 381 MiB; the search holds one block of 1M scores (4 MiB, 8 more for
    its partition indices) and the n x K results (tracemalloc sees numpy's allocations)."""
    n, k, block = 10_000, 5, 1 << 20
    q_chunk, d_chunk = chunk_sizes(n, n, k, block)
    assert q_chunk * (d_chunk + 2 * k) <= block
    x = np.random.default_rng(0).standard_normal((n, 8)).astype(np.float32)
    tracemalloc.start()
    try:
        indices, scores = top_k(x, x, k, exclude_self=True, block=block)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 24 * 2**20, peak
    rows = [0, 4999, n - 1]
    want_i, _ = brute_force_top_k(x[rows], x, k + 1)
    for row, want in zip(rows, want_i):
        assert list(indices[row]) == [j for j in want if j != row][:k]


# -------------------------------------------------------------------------------------- VLAD and files ---

def test_vlad_normalised_and_codebook_file(tmp_path):
    rng = np.random.default_rng(0)
    sample = rng.standard_normal((2000, 16)).astype(np.float32)
    codebook = train_codebook(sample, "aliked", size=8)
    v = vlad(sample[:300], codebook)
    assert v.shape == (8 * 16,) and np.isclose(np.linalg.norm(v), 1.0)
    assert not vlad(np.zeros((0, 16), np.float32), codebook).any()
    path = tmp_path / "codebook.npz"
    codebook.save(path)
    with np.load(path, allow_pickle=False) as data:  # plain arrays only
        assert set(data.files) == {"centroids", "extractor", "format"}
    again = Codebook.load(path)
    assert again.digest == codebook.digest and again.extractor == "aliked"
    with pytest.raises(ConfigError, match="codebook made for aliked"):
        again.check("disk", 16, str(path))
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (tmp_path / "objects.npy").rename(tmp_path / "bad.npz")
    with pytest.raises(InputError, match="not a lightmatch codebook"):
        Codebook.load(tmp_path / "bad.npz")


def test_global_feats_hloc_layout(tmp_path):
    path = tmp_path / "global-feats.h5"
    vectors = {"a.jpg": np.ones(4), "sub/b.jpg": np.arange(4.0)}
    write_global(path, vectors, {"lightmatch_codebook": "x"})
    with h5py.File(path, "r") as handle:  # as hloc's pairs_from_retrieval reads it
        assert handle["sub/b.jpg"]["global_descriptor"].shape == (4,)
    assert set(read_global(path)) == set(vectors)
    assert read_global(path, attrs={"lightmatch_codebook": "y"}) == {}


def test_pairs_unique_and_never_self():
    names = ["a", "b", "c"]
    pairs = pairs_from_neighbours(names, np.array([[0, 1, 2], [0, 2, -1], [1, 0, 1]]), names)
    assert pairs == [("a", "b"), ("a", "c"), ("b", "c")]
    assert merge_pairs([("a", "b")], [("b", "a"), ("c", "c"), ("c", "a")]) == [("a", "b"), ("c", "a")]


# ---------------------------------------------------------------------------------- the mixed folder ---

@pytest.fixture(scope="module")
def mixed(shared_data, tmp_path_factory):
    """A mixed folder (36 images: Sacré-Cœur, Freiburg, ScanNet scenes, DSC, homography warps) and its store after
    one retrieval run (ALIKED, 320 px, 256 keypoints)."""
    from lightmatch.eval.retrieval_data import build_mixed_folder
    from lightmatch.models.factory import load_extractor

    root = tmp_path_factory.mktemp("mixed")
    groups = build_mixed_folder(shared_data, root / "images", freiburg_step=3, scannet_scenes=5)
    extractor = load_extractor("aliked", max_keypoints=256, resize=320, device="cpu")
    result = retrieval_pairs(root / "images", root / "store", extractor, 5)
    return root, groups, result


def test_retrieval_recall_at_5(mixed):
    from lightmatch.eval.retrieval_data import overlapping_pairs, recall_at_k

    root, groups, result = mixed
    names = sorted(groups)
    assert result.images == names and result.extract.images_extracted == len(names)
    assert (root / "store" / "codebook.npz").is_file()
    same = overlapping_pairs(groups)
    relevant = {n: {m for p in same if n in p for m in p if m != n} for n in names}
    vectors = read_global(result.global_path, names)
    x = np.stack([vectors[n] for n in names])
    neighbours = {n: [names[j] for j in row] for n, row in zip(names, top_k(x, x, 5, exclude_self=True)[0])}
    recall = recall_at_k(neighbours, relevant, 5)
    rng = np.random.default_rng(0)
    chance = np.mean([recall_at_k({n: list(rng.permutation([m for m in names if m != n])[:5]) for n in names},
                                  relevant, 5) for _ in range(5)])
    print(f"recall@5 of same-scene images {recall:.3f}, random {chance:.3f}")
    assert recall >= 0.7 and recall > 2.5 * chance
    warps = [n for n in names if n.startswith("warps/")]
    found = {frozenset(p) for p in result.pairs}
    sources = {w: next(n for n in names if not n.startswith("warps/") and w.split("/")[1].startswith(
        n.split("/")[-1].rsplit(".", 1)[0])) for w in warps}
    assert sum(frozenset((w, s)) in found for w, s in sources.items()) >= len(warps) - 1  # overlap by construction
    assert len(found) == len(result.pairs) and all(a != b for a, b in result.pairs)


def test_pairs_command_reuses_the_store(mixed, tmp_path):
    root, groups, result = mixed
    store = root / "store"
    stamp = (store / "features.h5").stat().st_mtime_ns
    out = CliRunner().invoke(main, ["pairs", str(root / "images"), "--mode", "retrieval", "--num-matched", "5",
                                    "--store", str(store), "-o", str(tmp_path / "pairs.txt"), *MODEL])
    assert out.exit_code == 0, out.output
    assert (store / "features.h5").stat().st_mtime_ns == stamp  # nothing extracted again
    assert read_pairs(tmp_path / "pairs.txt") == result.pairs
    # a user's own hloc file: the same vectors give the same pairs, with no extraction at all
    own = tmp_path / "own-global-feats.h5"
    own.write_bytes((store / "global-feats.h5").read_bytes())
    out = CliRunner().invoke(main, ["pairs", str(root / "images"), "--mode", "retrieval", "--num-matched", "5",
                                    "--global-features", str(own), "-o", str(tmp_path / "own.txt")])
    assert out.exit_code == 0, out.output
    assert read_pairs(tmp_path / "own.txt") == result.pairs
    # hybrid: the sequential window plus retrieval
    out = CliRunner().invoke(main, ["pairs", str(root / "images"), "--mode", "sequential", "--window", "1",
                                    "--retrieval", "5", "--global-features", str(own)])
    hybrid = {frozenset(line.split()) for line in out.output.splitlines() if line and "lightmatch" not in line}
    names = sorted(groups)
    assert {frozenset(p) for p in zip(names, names[1:])} | {frozenset(p) for p in result.pairs} == hybrid


def test_query_against_database(mixed):
    root, groups, _ = mixed
    out = CliRunner().invoke(main, ["pairs", str(root / "images"), "--mode", "retrieval", "--num-matched", "3",
                                    "--query-dir", "warps", "--db-dir", "sacre_coeur",
                                    "--global-features", str(root / "store" / "global-feats.h5")])
    assert out.exit_code == 0, out.output
    lines = [line.split() for line in out.output.splitlines() if line and not line.startswith("lightmatch")]
    queries = [n for n in groups if n.startswith("warps/")]
    assert len(lines) == 3 * len(queries)
    assert all(a.startswith("warps/") and b.startswith("sacre_coeur/") for a, b in lines)


@pytest.mark.parametrize("args, message", [
    (["--mode", "exhaustive", "--num-matched", "5"], "--num-matched needs the retrieval mode"),
    (["--mode", "retrieval", "--retrieval", "5"], "--retrieval K adds retrieval to a sequential mode"),
    (["--mode", "retrieval", "--query-dir", "q"], "--query-dir and --db-dir go together"),
    (["--mode", "retrieval", "--query-dir", "q", "--db-dir", "d"], "--query-dir: q: no such folder under"),
    (["--mode", "exhaustive", "--store", "s"], "--store is for the retrieval mode"),
])
def test_retrieval_usage_errors(tmp_path, args, message):
    out = CliRunner().invoke(main, ["pairs", str(tmp_path), *args])
    assert out.exit_code == 2 and message in out.output


def test_pairs_retrieval_skips_a_broken_image(tmp_path):
    make_images(tmp_path / "imgs", 3)
    (tmp_path / "imgs" / "broken.png").write_bytes(b"not a png")
    out = CliRunner().invoke(main, ["pairs", str(tmp_path / "imgs"), "--mode", "retrieval", "--num-matched", "2",
                                    "-o", str(tmp_path / "pairs.txt"), *MODEL])
    assert out.exit_code == 3 and "broken.png" in out.output
    assert {frozenset(p) for p in read_pairs(tmp_path / "pairs.txt")} == {
        frozenset(p) for p in [("img00.png", "img01.png"), ("img00.png", "img02.png"), ("img01.png", "img02.png")]}


def test_match_retrieval_usage_errors(tmp_path):
    runner = CliRunner()
    out = runner.invoke(main, ["match", "--image-dir", str(tmp_path), "--pairs-mode", "retrieval", "--json"])
    assert out.exit_code == 2 and "retrieval pairs need -o OUTDIR" in out.output
    out = runner.invoke(main, ["match", "--image-dir", str(tmp_path), "--pairs-mode", "retrieval", "-o",
                               str(tmp_path / "o"), "--rotation-search"])
    assert out.exit_code == 2 and "--rotation-search does not go with retrieval pairs" in out.output


def test_global_features_missing_an_image(tmp_path):
    make_images(tmp_path / "imgs", 3)
    write_global(tmp_path / "g.h5", {"img00.png": np.ones(4), "img01.png": np.ones(4)}, {})
    out = CliRunner().invoke(main, ["pairs", str(tmp_path / "imgs"), "--mode", "retrieval",
                                    "--global-features", str(tmp_path / "g.h5")])
    assert out.exit_code == 1 and "no global descriptor for 1 image(s), e.g. 'img02.png'" in out.output


def test_match_with_retrieval_pairs(tmp_path):
    """match --pairs-mode retrieval: features extracted once (retrieval), read back for matching; a broken image
    is reported and left out."""
    make_images(tmp_path / "imgs", 6, size=(256, 192))
    (tmp_path / "imgs" / "broken.png").write_bytes(b"not a png")
    out = CliRunner().invoke(main, ["match", "--image-dir", str(tmp_path / "imgs"), "--pairs-mode", "retrieval",
                                    "--num-matched", "2", "-o", str(tmp_path / "out"), "--json", *MODEL,
                                    "--max-keypoints", "128"])
    assert out.exit_code == 3, out.output
    summary = [line for line in out.output.splitlines() if line.startswith('{"type": "summary"')][-1]
    import json

    summary = json.loads(summary)
    assert summary["images_extracted"] == 0 and summary["images_reused"] == 6
    assert 6 <= summary["pairs_matched"] <= 12 and summary["failed_images"].keys() == {"broken.png"}
    assert (tmp_path / "out" / "global-feats.h5").is_file() and (tmp_path / "out" / "codebook.npz").is_file()


@pytest.mark.parametrize("features", ["sift", "disk", "xfeat"])
def test_every_extractor_aggregates(features, tmp_path):
    """The other extractors' descriptors (dimensions 128, 128, 64) make a codebook and unit VLAD vectors; a
    codebook of another extractor is refused."""
    from lightmatch.models.factory import load_extractor

    make_images(tmp_path / "imgs", 3, size=(256, 192))
    extractor = load_extractor(features, max_keypoints=128, resize=256, device="cpu")
    result = retrieval_pairs(tmp_path / "imgs", tmp_path / "store", extractor, 2)
    assert len(result.pairs) == 3 and len(result.images) == 3
    vectors = read_global(result.global_path)
    assert all(np.isclose(np.linalg.norm(v), 1.0) for v in vectors.values())
    if features == "sift":
        other = load_extractor("aliked", max_keypoints=64, resize=256, device="cpu")
        with pytest.raises(ConfigError, match="codebook made for sift"):
            retrieval_pairs(tmp_path / "imgs", tmp_path / "other", other, 2, codebook=result.codebook_path)


def test_pairs_sequential_plus_retrieval_keeps_the_default_window(tmp_path):
    """--mode sequential --retrieval K without --window: the window of 5 (its default), plus the retrieved pairs
    (the window was dropped before)."""
    names = [f"f{i}.png" for i in range(7)]
    (tmp_path / "imgs").mkdir()
    for name in names:
        (tmp_path / "imgs" / name).write_bytes(b"")  # not decoded: the global descriptors are given
    write_global(tmp_path / "g.h5", {n: np.array([1.0, 0.1 * i]) for i, n in enumerate(names)}, {})
    out = CliRunner().invoke(main, ["pairs", str(tmp_path / "imgs"), "--mode", "sequential", "--retrieval", "1",
                                    "--global-features", str(tmp_path / "g.h5"), "-q"])
    assert out.exit_code == 0, out.output
    got = {frozenset(line.split()) for line in out.output.splitlines()}
    window = {frozenset((names[i], names[j])) for i in range(7) for j in range(i + 1, min(i + 6, 7))}
    assert window <= got
