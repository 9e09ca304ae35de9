"""Named settings (``--preset indoor|outdoor|fast``), measured in ``docs/evaluation.md``.

A preset is plain data: the option values it sets, by the option's name as the CLI spells it (``max_keypoints``
for ``--max-keypoints``). :func:`apply_preset` fills them into a command's options wherever the user did not give
the option; what the user gives always wins. Commands rename the two estimation settings to their own options
(``threshold`` is ``--ransac-threshold`` for ``eval`` and ``--verify-threshold`` for ``match --verify``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Collection, Mapping, Optional

from .errors import ConfigError


@dataclass(frozen=True)
class Preset:
    """A named set of option values.

    Attributes:
        name: what ``--preset`` takes. description: one line on when to use it.
        options: option name -> value: ``features``, ``max_keypoints``, ``detection_threshold``, ``resize`` (long
            side given to the network, ``-1`` original size), ``upsample`` (False in every preset: ``resize`` is
            an upper bound, smaller images keep their size), ``interpolation`` (``eval pose`` only),
            ``depth_confidence`` / ``width_confidence`` (``-1``: full LightGlue), ``rotation_search``,
            ``estimator`` and ``threshold``
            (robust estimation, pixels).
    """

    name: str
    description: str
    options: Mapping[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """``name: description (option=value, ...)``, one line, as ``--help`` lists it."""
        return f"{self.name}: {self.description} ({', '.join(f'{k}={v}' for k, v in self.options.items())})"


PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset("indoor", "blurry, weakly textured indoor images (measured on the ScanNet sample)",
               {"features": "aliked", "max_keypoints": 2048, "detection_threshold": 0.0, "resize": 640,
                "upsample": False, "interpolation": "area", "depth_confidence": -1.0, "width_confidence": -1.0,
                "rotation_search": True, "estimator": "poselib", "threshold": 3.0}),
        Preset("outdoor", "textured outdoor scenes (measured on a COLMAP model of sacre_coeur)",
               {"features": "aliked", "max_keypoints": 2048, "detection_threshold": 0.0, "resize": 1024,
                "upsample": False, "estimator": "poselib", "threshold": 1.0}),
        Preset("fast", "speed first: fewer keypoints, adaptive LightGlue, small images (measured on both sets)",
               {"features": "aliked", "max_keypoints": 1024, "detection_threshold": 0.0, "resize": 640,
                "upsample": False, "estimator": "poselib", "threshold": 2.0}),
    )
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; a :class:`ConfigError` naming the known ones otherwise."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset '{name}': choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def apply_preset(name: Optional[str], options: Mapping[str, Any], given: Collection[str],
                 rename: Optional[Mapping[str, str]] = None) -> dict[str, Any]:
    """``options`` with the preset's values filled in, except for the options in ``given`` (set by the user).

    Args:
        name: preset name, or ``None`` (``options`` returned unchanged, as a new dict).
        options: a command's options by name. given: names of the options the user set explicitly.
        rename: preset option -> the command's option name (e.g. ``{"threshold": "ransac_threshold"}``); preset
            options the command has no use for (not in ``options`` after renaming) are skipped.
    """
    out = dict(options)
    if name is None:
        return out
    rename = rename or {}
    for key, value in get_preset(name).options.items():
        target = rename.get(key, key)
        if target in out and target not in given:
            out[target] = value
    return out


def apply_preset_split(name: Optional[str], options: Mapping[str, Any], settings: Mapping[str, Any],
                       given: Collection[str], rename: Optional[Mapping[str, str]] = None
                       ) -> tuple[dict[str, Any], dict[str, Any]]:
    """:func:`apply_preset` over a command's model ``options`` and its own ``settings`` (estimator, threshold,
    resize, ...) together, returned apart: ``(options, settings)`` with the preset's values filled in."""
    chosen = apply_preset(name, {**options, **settings}, given, rename)
    return chosen, {key: chosen.pop(key) for key in settings}
