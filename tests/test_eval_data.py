"""Tests of lightmatch.eval.pose_data and lightmatch.eval.homography_data."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from lightmatch.errors import ConfigError, InputError
from lightmatch.eval import homography_data as HD
from lightmatch.eval import metrics as M
from lightmatch.eval import pose_data as PD

K_TEST = np.array([[500.0, 0.0, 300.0], [0.0, 600.0, 200.0], [0.0, 0.0, 1.0]])


# ---------------------------------------------------------------------------------------------------------------------
# resize and intrinsics
# ---------------------------------------------------------------------------------------------------------------------


def test_resize_for_eval():
    assert PD.resize_for_eval(640, 480, [320]) == (320, 240)
    assert PD.resize_for_eval(480, 640, [320]) == (240, 320)
    assert PD.resize_for_eval(1000, 333, [640]) == (640, 213)  # round(213.12)
    assert PD.resize_for_eval(1296, 968, [640]) == (640, 478)  # round(478.02)
    assert PD.resize_for_eval(640, 480, [-1]) == (640, 480)
    assert PD.resize_for_eval(640, 480, [800, 600]) == (800, 600)
    assert PD.resize_for_eval(640, 480, [1000, -1]) == (1000, 750)
    for bad in ([], [1, 2, 3], [0], [-5]):
        with pytest.raises(ConfigError):
            PD.resize_for_eval(640, 480, bad)


def test_scale_intrinsics_hand_derived():
    # image shrunk 2x horizontally and 4x vertically: scales = old / new = (2, 4)
    expected = np.array([[250.0, 0.0, 150.0], [0.0, 150.0, 50.0], [0.0, 0.0, 1.0]])
    assert np.allclose(PD.scale_intrinsics(K_TEST, (2.0, 4.0)), expected)


def test_rotate_intrinsics_hand_derived():
    # original image 640 x 480 (w x h); fx=500, fy=600, cx=300, cy=200
    w, h = 640, 480
    K1 = PD.rotate_intrinsics(K_TEST, (w, h), 1)  # shape after one quarter turn: rows=640, cols=480
    assert np.allclose(K1, [[600, 0, 200], [0, 500, w - 1 - 300], [0, 0, 1]])
    K2 = PD.rotate_intrinsics(K_TEST, (h, w), 2)
    assert np.allclose(K2, [[500, 0, w - 1 - 300], [0, 600, h - 1 - 200], [0, 0, 1]])
    K3 = PD.rotate_intrinsics(K_TEST, (w, h), 3)
    assert np.allclose(K3, [[600, 0, h - 1 - 200], [0, 500, 300], [0, 0, 1]])
    assert np.array_equal(PD.rotate_intrinsics(K_TEST, (h, w), 0), K_TEST)


@pytest.mark.parametrize("rot", [1, 2, 3])
def test_rotated_intrinsics_and_pose_follow_np_rot90(rot):
    # a 3D point projecting onto pixel (x, y) = (37, 21) of a 64 x 48 image; after np.rot90(image, rot) the pixel
    # moves; the rotated K with the in-plane-rotated camera must project the point onto the new pixel.
    w, h = 64, 48
    K = np.array([[50.0, 0.0, 30.0], [0.0, 55.0, 22.0], [0.0, 0.0, 1.0]])
    x, y = 37, 21
    X = 3.0 * np.linalg.inv(K) @ np.array([x, y, 1.0])
    img = np.zeros((h, w))
    img[y, x] = 1
    rotated = np.rot90(img, rot)
    y_new, x_new = np.argwhere(rotated == 1)[0]
    K_rot = PD.rotate_intrinsics(K, rotated.shape, rot)
    X_rot = PD.rotate_pose_inplane(np.eye(4), rot)[:3, :3] @ X
    proj = K_rot @ X_rot
    assert np.allclose(proj[:2] / proj[2], [x_new, y_new])


def _rot90_points(pts: np.ndarray, w: int, h: int, rot: int) -> np.ndarray:
    """Pixel coordinates after np.rot90(image, rot) of a w x h image (derived from the array indexing)."""
    x, y = pts[:, 0], pts[:, 1]
    if rot == 1:
        return np.stack([y, w - 1 - x], -1)
    if rot == 2:
        return np.stack([w - 1 - x, h - 1 - y], -1)
    if rot == 3:
        return np.stack([h - 1 - y, x], -1)
    return pts.copy()


@pytest.mark.parametrize("rots", [(0, 0), (1, 0), (0, 3), (2, 1)])
def test_adapt_pair_to_images_keeps_epipolar_geometry(rots):
    rng = np.random.default_rng(0)
    # sizes that resize uniformly: SuperGlue swaps the (sx, sy) scales for odd rotations, which is exact only then
    w0, h0, w1, h1 = 1280, 960, 1024, 768
    K0 = np.array([[1100.0, 0.0, 640.0], [0.0, 1090.0, 490.0], [0.0, 0.0, 1.0]])
    K1 = np.array([[900.0, 0.0, 510.0], [0.0, 905.0, 380.0], [0.0, 0.0, 1.0]])
    R, _ = cv2.Rodrigues(np.array([0.02, 0.15, -0.05]))
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, [0.9, -0.1, 0.2]
    X0 = rng.uniform([-2, -1.5, 5], [2, 1.5, 10], (50, 3))
    X1 = X0 @ R.T + T[:3, 3]
    p0 = (X0 @ K0.T)[:, :2] / X0[:, 2:]
    p1 = (X1 @ K1.T)[:, :2] / X1[:, 2:]
    resize = [640]
    pair = PD.PosePair("a.jpg", "b.jpg", rots[0], rots[1], K0, K1, T)
    K0a, K1a, Ta = PD.adapt_pair_to_images(pair, (w0, h0), (w1, h1), resize)
    # keypoints as they would be detected on the resized (uniform scale), then rotated images
    (rw0, rh0) = PD.resize_for_eval(w0, h0, resize)
    (rw1, rh1) = PD.resize_for_eval(w1, h1, resize)
    q0 = _rot90_points(p0 * [rw0 / w0, rh0 / h0], rw0, rh0, rots[0])
    q1 = _rot90_points(p1 * [rw1 / w1, rh1 / h1], rw1, rh1, rots[1])
    err = M.compute_epipolar_error(q0, q1, Ta, K0a, K1a)
    assert np.max(err) < 1e-12
    if rots == (0, 0):
        assert np.array_equal(Ta, T)
        assert np.allclose(K0a, PD.scale_intrinsics(K0, (w0 / rw0, h0 / rh0)))


def test_eval_image_scales_swaps_for_odd_rotations():
    # SuperGlue's read_image: scales = (w / w_new, h / h_new), reversed when the rotation is odd
    assert PD.eval_image_scales(1296, 968, [640], 0) == ((640, 478), (1296 / 640, 968 / 478))
    assert PD.eval_image_scales(1296, 968, [640], 1) == ((640, 478), (968 / 478, 1296 / 640))
    assert PD.eval_image_scales(1296, 968, [640], 2) == ((640, 478), (1296 / 640, 968 / 478))


# ---------------------------------------------------------------------------------------------------------------------
# pairs file
# ---------------------------------------------------------------------------------------------------------------------


def _pair_line(name0: str, name1: str, rot0: int, rot1: int, K0, K1, T) -> str:
    nums = [*np.asarray(K0).ravel(), *np.asarray(K1).ravel(), *np.asarray(T).ravel()]
    return " ".join([name0, name1, str(rot0), str(rot1)] + [repr(float(v)) for v in nums])


def test_read_pose_pairs(tmp_path: Path):
    T = np.eye(4)
    T[:3, 3] = [0.5, 0.0, 0.1]
    K1 = K_TEST * [[1.1], [1.1], [1.0]]
    text = "\n".join(
        [
            "# comment",
            _pair_line("scene/a.jpg", "scene/b.jpg", 0, 1, K_TEST, K1, T),
            "",
            _pair_line("c.png", "d.png", 3, 2, K1, K_TEST, np.eye(4)),
        ]
    )
    path = tmp_path / "pairs.txt"
    path.write_text(text + "\n")
    pairs = PD.read_pose_pairs(path)
    assert len(pairs) == 2
    p = pairs[0]
    assert (p.name0, p.name1, p.rot0, p.rot1, p.line) == ("scene/a.jpg", "scene/b.jpg", 0, 1, 2)
    assert np.array_equal(p.K0, K_TEST) and np.array_equal(p.K1, K1) and np.array_equal(p.T_0to1, T)
    assert (pairs[1].rot0, pairs[1].rot1, pairs[1].line) == (3, 2, 4)


def test_read_pose_pairs_errors_name_file_and_line(tmp_path: Path):
    good = _pair_line("a.jpg", "b.jpg", 0, 0, K_TEST, K_TEST, np.eye(4))
    path = tmp_path / "bad_pairs.txt"
    path.write_text("\n".join([good, good, " ".join(good.split()[:-1])]) + "\n")  # line 3 has 37 fields
    with pytest.raises(InputError) as exc:
        PD.read_pose_pairs(path)
    msg = str(exc.value)
    assert f"{path}:3:" in msg and "38" in msg and "37" in msg and "\n" not in msg

    fields = good.split()
    fields[10] = "abc"
    path.write_text(good + "\n" + " ".join(fields) + "\n")
    with pytest.raises(InputError, match=r"bad_pairs\.txt:2: field 11"):
        PD.read_pose_pairs(path)

    fields = good.split()
    fields[3] = "5"
    path.write_text(" ".join(fields) + "\n")
    with pytest.raises(InputError, match=r":1: field 4 \(rot1\)"):
        PD.read_pose_pairs(path)

    with pytest.raises(InputError, match="no such file"):
        PD.read_pose_pairs(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    with pytest.raises(InputError, match="no pairs"):
        PD.read_pose_pairs(tmp_path / "empty.txt")


# ---------------------------------------------------------------------------------------------------------------------
# HPatches layout
# ---------------------------------------------------------------------------------------------------------------------


def _write_hpatches(root: Path, seqs: list[str]) -> dict[tuple[str, int], np.ndarray]:
    rng = np.random.default_rng(0)
    truth = {}
    for seq in seqs:
        d = root / seq
        d.mkdir(parents=True)
        for k in range(1, 7):
            cv2.imwrite(str(d / f"{k}.ppm"), rng.integers(0, 255, (40, 48, 3), dtype=np.uint8))
        for k in range(2, 7):
            H = np.eye(3) + rng.normal(0, 0.01, (3, 3))
            H[2, 2] = 1.0
            truth[(seq, k)] = H
            # HPatches files use irregular spacing and trailing blanks
            (d / f"H_1_{k}").write_text("\n".join("  ".join(f"{v:.10e}" for v in row) + " " for row in H) + "\n")
    return truth


def test_read_hpatches(tmp_path: Path):
    truth = _write_hpatches(tmp_path, ["i_ajuntament", "v_boat", "v_talent"])
    (tmp_path / "not_a_sequence").mkdir()
    pairs = HD.read_hpatches(tmp_path)  # v_talent is one of the skipped large scenes
    assert len(pairs) == 10
    assert pairs[0].name0 == "i_ajuntament/1.ppm" and pairs[0].name1 == "i_ajuntament/2.ppm"
    assert pairs[-1].name1 == "v_boat/6.ppm" and pairs[-1].scene == "v_boat"
    assert pairs[3].path1 == tmp_path / "i_ajuntament" / "5.ppm"
    for p in pairs:
        k = int(p.name1.split("/")[1][0])
        assert np.allclose(p.H_0to1, truth[(p.scene, k)], rtol=1e-9)
    assert len(HD.read_hpatches(tmp_path, skip_large=False)) == 15
    assert [p.scene for p in HD.read_hpatches(tmp_path, subset="i")] == ["i_ajuntament"] * 5
    assert len(HD.load_homography_pairs(tmp_path)) == 10

    (tmp_path / "v_boat" / "H_1_4").write_text("1 0 0\n0 1 x\n0 0 1\n")
    with pytest.raises(InputError, match=r"v_boat/H_1_4:2: 'x' is not a finite number"):
        HD.read_hpatches(tmp_path)
    (tmp_path / "v_boat" / "H_1_4").write_text("1 0 0\n0 1\n0 0 1\n")
    with pytest.raises(InputError, match=r"H_1_4:2: expected 3 numbers"):
        HD.read_hpatches(tmp_path)


def test_hpatches_resize_and_rescale_homography():
    assert HD.hpatches_resize(800, 600) == (640, 480)
    assert HD.hpatches_resize(600, 800) == (480, 640)
    assert HD.hpatches_resize(1000, 700, 480) == (685, 480)  # int(480 * 1000 / 700)
    assert HD.hpatches_resize(800, 600, 400, side="long") == (400, 300)
    assert HD.hpatches_resize(800, 600, None) == (800, 600)
    H = np.array([[1.0, 0.1, 5.0], [0.0, 0.9, -3.0], [1e-4, 0.0, 1.0]])
    s0, s1 = (0.5, 0.4), (0.25, 0.3)
    Hs = HD.rescale_homography(H, s0, s1)
    p = np.array([[10.0, 20.0], [300.0, 100.0]])
    assert np.allclose(M.warp_points(p * s0, Hs), M.warp_points(p, H) * s1)


# ---------------------------------------------------------------------------------------------------------------------
# synthetic pairs
# ---------------------------------------------------------------------------------------------------------------------


def test_synthetic_homography_deterministic_and_inside():
    for seed in range(20):
        H = HD.synthetic_homography(np.random.default_rng(seed), 300, 200, (160, 120))
        H2 = HD.synthetic_homography(np.random.default_rng(seed), 300, 200, (160, 120))
        assert np.array_equal(H, H2)
        # the output patch maps back inside the source image (no empty border)
        corners = np.array([[0, 0], [160, 0], [160, 120], [0, 120]], dtype=np.float64)
        src = M.warp_points(corners, np.linalg.inv(H))
        assert np.all(src >= -1e-6) and np.all(src <= [300 + 1e-6, 200 + 1e-6])
    assert not np.allclose(
        HD.synthetic_homography(np.random.default_rng(0), 300, 200),
        HD.synthetic_homography(np.random.default_rng(1), 300, 200),
    )
    # difficulty 0 gives the plain resize
    H0 = HD.synthetic_homography(np.random.default_rng(0), 300, 200, (150, 100), difficulty=0.0)
    assert np.allclose(H0, np.diag([0.5, 0.5, 1.0]))


def _textured_image(path: Path, seed: int, size=(220, 180), color=True) -> None:
    rng = np.random.default_rng(seed)
    w, h = size
    img = cv2.resize(rng.uniform(0, 255, (h // 8, w // 8, 3 if color else 1)).astype(np.float32), (w, h))
    img = np.clip(img + rng.normal(0, 10, img.shape[:2] + ((3,) if color else ())), 0, 255).astype(np.uint8)
    cv2.imwrite(str(path), img)


def test_make_synthetic_pairs_deterministic_and_readable(tmp_path: Path):
    sources = [tmp_path / "src0.png", tmp_path / "src1.png"]
    _textured_image(sources[0], 0)
    _textured_image(sources[1], 1, color=False)
    out_a, out_b, out_c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    pairs = HD.make_synthetic_pairs(sources, 3, out_a, seed=5, size=(160, 120))
    HD.make_synthetic_pairs(sources, 3, out_b, seed=5, size=(160, 120))
    HD.make_synthetic_pairs(sources, 3, out_c, seed=6, size=(160, 120))
    assert (out_a / "pairs.txt").read_text() == (out_b / "pairs.txt").read_text()
    assert (out_a / "pairs.txt").read_text() != (out_c / "pairs.txt").read_text()
    for p in pairs:
        for name in (p.name0, p.name1):
            assert (out_a / name).read_bytes() == (out_b / name).read_bytes()
            assert cv2.imread(str(out_a / name), cv2.IMREAD_UNCHANGED).shape[:2] == (120, 160)

    back = HD.load_homography_pairs(out_a)
    assert [(p.name0, p.name1) for p in back] == [(p.name0, p.name1) for p in pairs]
    for p, q in zip(back, pairs):
        assert np.array_equal(p.H_0to1, q.H_0to1)  # written with full precision
        assert p.path0 == out_a / p.name0
    assert len(HD.read_homography_pairs(out_a / "pairs.txt")) == 3


def test_synthetic_ground_truth_aligns_views(tmp_path: Path):
    src = tmp_path / "src.png"
    _textured_image(src, 3, size=(300, 240))
    pairs = HD.make_synthetic_pairs([src], 2, tmp_path / "out", seed=0, size=(200, 150), photometric=False)
    for p in pairs:
        im0 = cv2.imread(str(p.path0), cv2.IMREAD_GRAYSCALE).astype(np.float32)
        im1 = cv2.imread(str(p.path1), cv2.IMREAD_GRAYSCALE).astype(np.float32)
        warped = cv2.warpPerspective(im0, p.H_0to1, (200, 150))
        valid = cv2.warpPerspective(np.ones_like(im0), p.H_0to1, (200, 150)) > 0.999
        valid = cv2.erode(valid.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        assert valid.mean() > 0.2
        aligned = np.abs(warped - im1)[valid].mean()
        shifted = np.abs(np.roll(warped, 4, axis=1) - im1)[valid].mean()
        assert aligned < 0.5 * shifted


def test_homography_pairs_file_errors(tmp_path: Path):
    path = tmp_path / "pairs.txt"
    path.write_text("# header\na.png b.png 1 0 0 0 1 0 0 0 1\na.png b.png 1 0 0 0 1 0 0 0\n")
    with pytest.raises(InputError, match=r"pairs\.txt:3: expected 11 fields"):
        HD.read_homography_pairs(path)
    path.write_text("a.png b.png 1 0 0 0 1 0 0 0 0\n")
    with pytest.raises(InputError, match=r"pairs\.txt:1: homography is singular"):
        HD.read_homography_pairs(path)
    with pytest.raises(InputError, match="no such file or folder"):
        HD.load_homography_pairs(tmp_path / "nope")
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    with pytest.raises(InputError, match="no HPatches sequence"):
        HD.load_homography_pairs(empty)
    with pytest.raises(InputError):
        HD.make_synthetic_pairs([], 1, tmp_path / "x")
