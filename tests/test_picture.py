"""lightmatch.sfm.picture: the scene's up direction, the top view's projection on the ground plane (recorded from
matplotlib's scatter calls), its outlier and size limits, the PNG, and what draw_model takes from a model."""

from __future__ import annotations

import types

import numpy as np
import pytest

from lightmatch.errors import OutputError
from lightmatch.sfm import picture as P


def rotation_x(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def test_up_is_minus_the_mean_image_y_axis():
    assert np.allclose(P.up_direction(np.stack([np.eye(3)] * 3)), [0, -1, 0])
    tilted = np.stack([rotation_x(0.3), rotation_x(-0.3)])  # tilted either way: the mean is upright
    assert np.allclose(P.up_direction(tilted), [0, -1, 0])
    turned = rotation_x(np.pi / 2)[None]  # image y along world z
    assert np.allclose(P.up_direction(turned), -turned[0, 1])
    flipped = np.stack([np.eye(3), np.diag([1.0, -1.0, -1.0])])  # opposite y axes: no up, the default
    assert np.allclose(P.up_direction(flipped), [0, 0, 1])


@pytest.fixture
def scatters(monkeypatch):
    """The (x, y, label) of every scatter call of the picture."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.axes

    calls = []
    original = matplotlib.axes.Axes.scatter

    def scatter(self, x, y, *args, **kwargs):
        calls.append((np.asarray(x), np.asarray(y), kwargs.get("label")))
        return original(self, x, y, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "scatter", scatter)
    return calls


def scene():
    """Upright cameras on the ground plane y = 0 (image y = world y, so up is -y), looking along z, and points on
    a ground grid at two heights, plus one far outlier."""
    centres = np.array([[i, 0.0, 0.5 * i] for i in range(5)])
    rotations = np.stack([np.eye(3)] * 5)
    directions = rotations[:, 2, :]
    grid = np.array([[x, 0.0, z] for x in np.linspace(0, 8, 20) for z in np.linspace(3, 6, 10)])
    points = np.concatenate([grid, grid + [0, -3.0, 0], [[1000.0, 0.0, 4.0]]])
    return points, centres, directions, rotations


def test_top_view_projects_on_the_ground_plane(tmp_path, scatters):
    points, centres, directions, rotations = scene()
    P.top_view(points, centres, directions, rotations, tmp_path / "sub" / "top.png", "model 0")
    assert (tmp_path / "sub" / "top.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (px, py, plabel), (cx, cy, clabel) = scatters
    assert (plabel, clabel) == ("401 points", "5 cameras")  # the outlier counts, but is not drawn
    drawn = np.stack([px, py], 1)
    assert len(drawn) == 400 and np.abs(drawn).max() < 100
    assert np.allclose(drawn[:200], drawn[200:])  # height does not move a point seen from above
    cams = np.stack([cx, cy], 1)
    expected = np.linalg.norm(centres[:, None] - centres[None], axis=2)  # the ground plane keeps its distances
    assert np.allclose(np.linalg.norm(cams[:, None] - cams[None], axis=2), expected)


def test_top_view_caps_the_points_and_draws_cameras_alone(tmp_path, scatters, monkeypatch):
    points, centres, directions, rotations = scene()
    monkeypatch.setattr(P, "MAX_POINTS", 50)
    P.top_view(points, centres, directions, rotations, tmp_path / "a.png", "capped")
    assert scatters[0][2] == "50 points" and len(scatters[0][0]) <= 50
    scatters.clear()
    P.top_view(np.zeros((0, 3)), centres, directions, rotations, tmp_path / "b.png", "cameras only")
    assert [label for _, _, label in scatters] == ["5 cameras"] and (tmp_path / "b.png").is_file()


def test_top_view_unwritable(tmp_path):
    points, centres, directions, rotations = scene()
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match=f"{tmp_path / 'file' / 'top.png'}: cannot write the picture"):
        P.top_view(points, centres, directions, rotations, tmp_path / "file" / "top.png", "t")


def pose(rotation):
    return types.SimpleNamespace(rotation=types.SimpleNamespace(matrix=lambda: rotation))


def test_draw_model_takes_posed_images_and_points(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(P, "top_view", lambda *args: seen.update(args=args))
    r1, r2 = np.eye(3), rotation_x(0.5)
    images = {  # pycolmap >= 3.12 has cam_from_world(), older versions the attribute
        1: types.SimpleNamespace(has_pose=True, cam_from_world=lambda: pose(r1), projection_center=lambda: [1, 2, 3]),
        2: types.SimpleNamespace(has_pose=False),
        3: types.SimpleNamespace(has_pose=True, cam_from_world=pose(r2), projection_center=lambda: [4, 5, 6]),
    }
    model = types.SimpleNamespace(images=images, points3D={7: types.SimpleNamespace(xyz=np.array([0.0, 1, 2]))})
    P.draw_model(model, tmp_path / "p.png", "model 0")
    points, centres, directions, rotations, path, title = seen["args"]
    assert np.array_equal(points, [[0, 1, 2]]) and np.array_equal(centres, [[1, 2, 3], [4, 5, 6]])
    assert np.allclose(rotations, [r1, r2]) and np.allclose(directions, [r1[2], r2[2]])
    assert (path, title) == (tmp_path / "p.png", "model 0")
    P.draw_model(types.SimpleNamespace(images=images, points3D={}), tmp_path / "p.png", "no points")
    assert seen["args"][0].shape == (0, 3)
