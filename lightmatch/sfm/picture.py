"""A picture of a model seen from above: its 3D points and its cameras (centre and viewing direction), PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import OutputError

MAX_POINTS = 50_000  # drawn at most (a random subset beyond)


def up_direction(camera_rotations: np.ndarray) -> np.ndarray:
    """The scene's up: minus the mean of the cameras' image-y axes in world coordinates (images are mostly taken
    upright, and image y points down). ``camera_rotations``: (N, 3, 3) world-to-camera rotations."""
    down = camera_rotations[:, 1, :].mean(0)  # row 1 of R is the camera's y axis in world coordinates
    norm = np.linalg.norm(down)
    return -down / norm if norm > 0 else np.array([0.0, 0.0, 1.0])


def top_view(points: np.ndarray, centres: np.ndarray, directions: np.ndarray, rotations: np.ndarray,
             path: Path, title: str) -> None:
    """Draw ``points`` (P, 3) and cameras (``centres`` and viewing ``directions``, (C, 3); ``rotations`` (C, 3, 3)
    world-to-camera) projected on the ground plane, seen from above, into a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    up = up_direction(rotations)
    # ground axes: the main horizontal spread of the cameras and points, then its perpendicular
    flat = np.concatenate([points, centres]) if len(points) else centres
    flat = flat - flat.mean(0)
    flat = flat - np.outer(flat @ up, up)
    _, _, vt = np.linalg.svd(flat, full_matrices=False)
    x_axis = vt[0] - (vt[0] @ up) * up
    x_axis /= np.linalg.norm(x_axis)
    y_axis = np.cross(up, x_axis)
    basis = np.stack([x_axis, y_axis], 1)
    if len(points) > MAX_POINTS:
        points = points[np.random.default_rng(0).choice(len(points), MAX_POINTS, replace=False)]
    p, c, d = points @ basis, centres @ basis, directions @ basis
    fig, ax = plt.subplots(figsize=(8, 8), dpi=100)
    if len(p):
        lo, hi = np.percentile(p, [1, 99], axis=0)  # far outliers would shrink the scene to a dot
        keep = ((p >= lo - (hi - lo)) & (p <= hi + (hi - lo))).all(1)
        ax.scatter(p[keep, 0], p[keep, 1], s=0.5, c="0.35", linewidths=0, label=f"{len(points)} points")
    span = np.ptp(np.concatenate([p, c]) if len(p) else c, axis=0).max() or 1.0
    ax.quiver(c[:, 0], c[:, 1], d[:, 0], d[:, 1], color="tab:red", angles="xy", scale_units="xy",
              scale=1 / (0.05 * span), width=0.004)
    ax.scatter(c[:, 0], c[:, 1], s=12, c="tab:red", label=f"{len(c)} cameras")
    ax.set_aspect("equal")
    ax.set_title(title)
    ax.legend(loc="upper right")
    ax.set_xticks([])
    ax.set_yticks([])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, bbox_inches="tight")
    except OSError as exc:
        raise OutputError(f"{path}: cannot write the picture ({exc.strerror or exc})") from exc
    finally:
        plt.close(fig)


def draw_model(model, path: Path, title: str) -> None:
    """:func:`top_view` of a pycolmap reconstruction."""
    images = [im for im in model.images.values() if im.has_pose]
    poses = [im.cam_from_world() if callable(im.cam_from_world) else im.cam_from_world for im in images]
    rotations = np.stack([pose.rotation.matrix() for pose in poses]) if poses else np.zeros((0, 3, 3))
    centres = np.stack([im.projection_center() for im in images]) if images else np.zeros((0, 3))
    directions = rotations[:, 2, :] if len(rotations) else np.zeros((0, 3))
    points = np.array([p.xyz for p in model.points3D.values()]).reshape(-1, 3)
    top_view(points, centres, directions, rotations, path, title)
