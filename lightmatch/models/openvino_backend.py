"""OpenVINO as an optional runtime for an extractor's dense network (``--backend openvino``, the extra
``pip install "lightmatch[openvino]"``).

Adopted for DISK only, from the measurement in docs/benchmarks.md (``scripts/bench_runtimes.py``): its U-Net runs
1.4x faster than torch in fp32 (the same keypoints within 1 px) and 2.3x faster than our torch bf16 path in bf16.
ALIKED runs faster in torch, so it has no such backend.
"""

from __future__ import annotations

import sys
import warnings

import torch

from .. import precision as amp
from ..errors import ConfigError

PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16"}  # resolved precision -> OpenVINO's inference precision hint
_TELEMETRY = "openvino_telemetry"
_CONVERTER_MODULES = ("openvino.tools.ovc.telemetry_utils", "openvino.tools.ovc.convert_impl",
                      "openvino.tools.ovc.utils", "openvino.tools.ovc.main")


def import_openvino():
    """``openvino`` with its telemetry off, so that nothing is sent over the network or written under ``~/intel``.

    OpenVINO's converter sends usage events (at import, and per conversion) through the ``openvino_telemetry``
    package, which by default needs no consent, resolves an analytics host and writes a client id under the home
    folder; its documented opt-out (``opt_in_out --opt_out``) itself writes there. Without that package the
    converter uses its own no-op stub (``openvino.tools.ovc.telemetry_stub``), so while ``openvino`` is imported the
    package is hidden; converter modules imported earlier by someone else are switched to the stub too."""
    hidden = _TELEMETRY not in sys.modules
    if hidden:
        sys.modules[_TELEMETRY] = None  # its import fails: the converter falls back to the stub
    try:
        import openvino
        from openvino.tools.ovc import telemetry_stub
    finally:
        if hidden and sys.modules.get(_TELEMETRY, False) is None:
            del sys.modules[_TELEMETRY]
    for name in _CONVERTER_MODULES:
        module = sys.modules.get(name)
        if module is not None and hasattr(module, "tm"):
            module.tm = telemetry_stub
    return openvino


class OpenVINONetwork:
    """A torch module converted once to OpenVINO (any input height and width) and compiled for the CPU.

    Args:
        module: the network, taking one ``(1, C, H, W)`` tensor and returning one tensor.
        channels: ``C``. precision: ``fp32`` / ``auto`` (OpenVINO's f32 hint) or ``bf16``.
        threads: CPU threads (default: torch's).
    """

    def __init__(self, module: torch.nn.Module, channels: int, precision: str, threads: int | None = None) -> None:
        try:
            ov = import_openvino()
        except ImportError:
            raise ConfigError('--backend openvino needs OpenVINO: pip install "lightmatch[openvino]"') from None
        resolved = amp.name(amp.resolve(precision, "cpu"))
        if resolved not in PRECISION_HINTS:
            raise ConfigError(f"--backend openvino runs fp32 or bf16, not {precision}")
        with warnings.catch_warnings():  # the tracer's warnings about the conversion are not the user's business
            warnings.simplefilter("ignore")
            model = ov.convert_model(module.eval(), example_input=torch.zeros(1, channels, 64, 64),
                                     input=[ov.PartialShape([1, channels, -1, -1])])
        compiled = ov.Core().compile_model(model, "CPU", {
            "INFERENCE_PRECISION_HINT": PRECISION_HINTS[resolved],
            "INFERENCE_NUM_THREADS": threads or torch.get_num_threads(), "PERFORMANCE_HINT": "LATENCY"})
        self._request = compiled.create_infer_request()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Run on ``x`` (on the CPU); the output is a torch tensor of its own (not OpenVINO's buffer)."""
        self._request.infer({0: x.detach().cpu().contiguous().numpy()})
        return torch.from_numpy(self._request.get_output_tensor(0).data.copy())
