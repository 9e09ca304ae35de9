"""SuperGlue matcher (Sarlin et al., CVPR 2020): attentional GNN + optimal transport with a dustbin.

Architecture and parameter names follow Magic Leap's release (``kenc.encoder.*``, ``gnn.layers.N.attn.merge``,
``gnn.layers.N.attn.proj.{0,1,2}``, ``gnn.layers.N.mlp.*``, ``final_proj``, ``bin_score``), so
``superglue_indoor.pth`` / ``superglue_outdoor.pth`` load with ``strict=True``. Those weights are under Magic Leap's
non-commercial licence and are not shipped.

The optimal transport (:func:`log_optimal_transport`) runs in log space and always in float32 (also under
autocast or with fp16 inputs), so it is differentiable and does not overflow; it is public for training.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .. import precision as amp
from .. import weights
from ..errors import ConfigError
from ..geometry import normalize_keypoints
from ..types import Features, Matches
from .base import Matcher
from .padding import pad_stack

VARIANTS = ("indoor", "outdoor")
SUPERGLUE_EXTENT = 0.7  # keypoints are normalised by 0.7 x the long side (SuperGlue)


def MLP(channels: Sequence[int], do_bn: bool = True) -> nn.Sequential:
    """1x1-convolution MLP with BatchNorm and ReLU between layers (none after the last), as the reference.

    Indices of the layers in the ``nn.Sequential`` are those of the official checkpoints (conv, bn, relu, ...).
    """
    layers: list[nn.Module] = []
    n = len(channels)
    for i in range(1, n):
        layers.append(nn.Conv1d(channels[i - 1], channels[i], kernel_size=1, bias=True))
        if i < n - 1:
            if do_bn:
                layers.append(nn.BatchNorm1d(channels[i]))
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class KeypointEncoder(nn.Module):
    """Encodes ``(x, y, score)`` into the descriptor space with an MLP."""

    def __init__(self, feature_dim: int, layers: Sequence[int]) -> None:
        super().__init__()
        self.encoder = MLP([3, *layers, feature_dim])
        nn.init.constant_(self.encoder[-1].bias, 0.0)

    def forward(self, kpts: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """``(B, N, 2)`` normalised keypoints, ``(B, N)`` scores -> ``(B, D, N)``."""
        inputs = torch.cat([kpts.transpose(1, 2), scores.unsqueeze(1)], dim=1)
        return self.encoder(inputs)


class MultiHeadedAttention(nn.Module):
    """Multi-head attention with 1x1-convolution projections (``proj`` q/k/v, ``merge``).

    Channel ``c`` of a projection belongs to head ``c % num_heads`` (the reference's ``view(B, dim, heads, N)``).
    """

    def __init__(self, num_heads: int, d_model: int) -> None:
        super().__init__()
        if d_model % num_heads:
            raise ConfigError(f"superglue: descriptor_dim {d_model} not divisible by {num_heads} heads")
        self.dim = d_model // num_heads
        self.num_heads = num_heads
        self.merge = nn.Conv1d(d_model, d_model, kernel_size=1)
        self.proj = nn.ModuleList([nn.Conv1d(d_model, d_model, kernel_size=1) for _ in range(3)])

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``(B, D, N)`` queries, ``(B, D, M)`` keys/values, optional ``(B, M)`` mask of real (not padded) keys ->
        ``(B, D, N)`` messages."""
        b = query.shape[0]
        q, k, v = [
            proj(x).view(b, self.dim, self.num_heads, -1).permute(0, 2, 3, 1)  # (B, heads, N, dim)
            for proj, x in zip(self.proj, (query, key, value))
        ]
        mask = None if key_mask is None else key_mask[:, None, None, :]
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # softmax(q k^T / sqrt(dim)) v
        x = x.permute(0, 3, 1, 2).reshape(b, self.dim * self.num_heads, -1)
        return self.merge(x)


class AttentionalPropagation(nn.Module):
    """One GNN layer: attention message, then MLP on ``[x, message]`` (residual added by the caller)."""

    def __init__(self, feature_dim: int, num_heads: int) -> None:
        super().__init__()
        self.attn = MultiHeadedAttention(num_heads, feature_dim)
        self.mlp = MLP([feature_dim * 2, feature_dim * 2, feature_dim])
        nn.init.constant_(self.mlp[-1].bias, 0.0)

    def forward(self, x: torch.Tensor, source: torch.Tensor,
                source_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``(B, D, N)``, ``(B, D, M)`` (optional ``(B, M)`` mask of real source points) -> ``(B, D, N)`` update."""
        message = self.attn(x, source, source, source_mask)
        return self.mlp(torch.cat([x, message], dim=1))


class AttentionalGNN(nn.Module):
    """Alternating self- and cross-attention layers."""

    def __init__(self, feature_dim: int, layer_names: Sequence[str], num_heads: int = 4) -> None:
        super().__init__()
        bad = [n for n in layer_names if n not in ("self", "cross")]
        if bad:
            raise ConfigError(f"superglue: GNN layer names must be 'self' or 'cross', got {bad[0]!r}")
        self.layers = nn.ModuleList([AttentionalPropagation(feature_dim, num_heads) for _ in layer_names])
        self.names = list(layer_names)

    def forward(self, desc0: torch.Tensor, desc1: torch.Tensor, mask0: Optional[torch.Tensor] = None,
                mask1: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, D, N)``, ``(B, D, M)`` (optional ``(B, N)``, ``(B, M)`` masks of real points) -> updated
        descriptors of the same shapes."""
        for layer, name in zip(self.layers, self.names):
            cross = name == "cross"
            src0, src1 = (desc1, desc0) if cross else (desc0, desc1)
            smask0, smask1 = (mask1, mask0) if cross else (mask0, mask1)
            delta0, delta1 = layer(desc0, src0, smask0), layer(desc1, src1, smask1)
            desc0, desc1 = desc0 + delta0, desc1 + delta1
        return desc0, desc1


def log_sinkhorn_iterations(Z: torch.Tensor, log_mu: torch.Tensor, log_nu: torch.Tensor, iters: int) -> torch.Tensor:
    """Sinkhorn normalisation in log space.

    Args:
        Z: ``(B, M, N)`` log couplings; ``log_mu`` ``(B, M)`` and ``log_nu`` ``(B, N)`` log marginals.

    Returns:
        ``(B, M, N)`` log transport plan; after the last iteration its columns match ``nu`` exactly and its rows
        match ``mu`` up to convergence.
    """
    u, v = torch.zeros_like(log_mu), torch.zeros_like(log_nu)
    for _ in range(iters):
        u = log_mu - torch.logsumexp(Z + v.unsqueeze(1), dim=2)
        v = log_nu - torch.logsumexp(Z + u.unsqueeze(2), dim=1)
    return Z + u.unsqueeze(2) + v.unsqueeze(1)


def log_optimal_transport(scores: torch.Tensor, alpha: torch.Tensor, iters: int,
                          mask0: Optional[torch.Tensor] = None, mask1: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Differentiable optimal transport with a dustbin row and column, in log space (SuperGlue).

    The ``(M, N)`` scores are augmented with a dustbin row and column of constant score ``alpha``. The target
    marginals are 1 for each point and ``N`` (resp. ``M``) for the dustbin row (resp. column). Computed in float32
    whatever the input dtype or autocast state (differentiable w.r.t. ``scores`` and ``alpha``).

    Args:
        scores: ``(B, M, N)`` similarity scores.
        alpha: scalar tensor, the dustbin score (``bin_score``).
        iters: number of Sinkhorn iterations.
        mask0, mask1: optional ``(B, M)``, ``(B, N)`` masks of real points of padded pairs: padded points get no
            mass (their log assignment is about -1e9) and each pair's marginals use its own point counts.

    Returns:
        ``(B, M+1, N+1)`` float32 log assignment: ``exp`` of it has row sums ``[1]*M + [N]`` and column sums
        ``[1]*N + [M]`` (at convergence).
    """
    device_type = scores.device.type if scores.device.type in ("cuda", "cpu", "xpu", "mps") else "cpu"
    with torch.autocast(device_type=device_type, enabled=False):
        scores = scores.float()
        alpha = alpha.float()
        b, m, n = scores.shape
        ms = scores.new_tensor(float(m))
        ns = scores.new_tensor(float(n))
        bins0 = alpha.expand(b, m, 1)
        bins1 = alpha.expand(b, 1, n)
        corner = alpha.expand(b, 1, 1)
        couplings = torch.cat([torch.cat([scores, bins0], -1), torch.cat([bins1, corner], -1)], 1)
        if mask0 is None or mask1 is None:
            norm = -(ms + ns).log()
            log_mu = torch.cat([norm.expand(m), ns.log()[None] + norm])
            log_nu = torch.cat([norm.expand(n), ms.log()[None] + norm])
            log_mu, log_nu = log_mu[None].expand(b, -1), log_nu[None].expand(b, -1)
            Z = log_sinkhorn_iterations(couplings, log_mu, log_nu, iters)
            return Z - norm  # probabilities times M+N
        # Padded pairs: -1e9 (not -inf, which would give NaN) removes padded rows and columns from every sum.
        valid0 = F.pad(mask0, (0, 1), value=True)
        valid1 = F.pad(mask1, (0, 1), value=True)
        couplings = couplings.masked_fill(~(valid0[:, :, None] & valid1[:, None, :]), -1e9)
        ms, ns = mask0.sum(1).float(), mask1.sum(1).float()
        norm = -(ms + ns).log()  # (B,)
        log_mu = torch.where(mask0, norm[:, None], -1e9)
        log_nu = torch.where(mask1, norm[:, None], -1e9)
        log_mu = torch.cat([log_mu, (ns.log() + norm)[:, None]], 1)
        log_nu = torch.cat([log_nu, (ms.log() + norm)[:, None]], 1)
        Z = log_sinkhorn_iterations(couplings, log_mu, log_nu, iters)
        return Z - norm[:, None, None]


def extract_matches(log_assignment: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor,
                                                                             torch.Tensor, torch.Tensor]:
    """Mutual-best matches above ``threshold`` from a log assignment, as SuperGlue.

    Args:
        log_assignment: ``(B, M+1, N+1)`` output of :func:`log_optimal_transport`.
        threshold: minimum match probability.

    Returns:
        matches0 ``(B, M)`` and matches1 ``(B, N)`` int64 indices or -1; scores0 ``(B, M)`` and scores1 ``(B, N)``
        probabilities of the mutual best (0 where not mutual; can be below ``threshold`` where unmatched).
    """
    inner = log_assignment[:, :-1, :-1]
    max0, max1 = inner.max(2), inner.max(1)
    indices0, indices1 = max0.indices, max1.indices
    mutual0 = torch.arange(indices0.shape[1], device=indices0.device)[None] == indices1.gather(1, indices0)
    mutual1 = torch.arange(indices1.shape[1], device=indices1.device)[None] == indices0.gather(1, indices1)
    zero = inner.new_tensor(0)
    mscores0 = torch.where(mutual0, max0.values.exp(), zero)
    mscores1 = torch.where(mutual1, mscores0.gather(1, indices1), zero)
    valid0 = mutual0 & (mscores0 > threshold)
    valid1 = mutual1 & valid0.gather(1, indices1)
    indices0 = torch.where(valid0, indices0, indices0.new_tensor(-1))
    indices1 = torch.where(valid1, indices1, indices1.new_tensor(-1))
    return indices0, indices1, mscores0, mscores1


class SuperGlue(Matcher):
    """SuperGlue with Magic Leap's architecture and parameter names.

    Args:
        variant: ``'indoor'`` (ScanNet) or ``'outdoor'`` (MegaDepth) weights.
        descriptor_dim: descriptor size (256, SuperPoint).
        keypoint_encoder: hidden sizes of the keypoint MLP.
        gnn_layers: names of the GNN layers, ``'self'`` or ``'cross'`` (default ``['self', 'cross'] * 9``).
        sinkhorn_iterations: iterations of the optimal transport.
        match_threshold: minimum match probability.
        num_heads: attention heads (4 in the official weights).
        precision: ``fp32`` (default: the reference's numbers), ``auto`` (fp16 autocast on CUDA, fp32 on CPU),
            ``fp16`` or ``bf16`` autocast for the network; the optimal transport always runs in float32.
        weights_path: explicit checkpoint; default: the registry's ``superglue_{variant}``. With ``state_dict`` it
            only names the source in error messages.
        state_dict: an already loaded checkpoint (skips file resolution).
        pretrained: load weights (default); False leaves the random initialisation (training, tests).

    A checkpoint with another number of GNN layers (alternating self/cross) sets the depth.

    The module is created in eval mode (BatchNorm uses its running statistics); call ``.train()`` to train.
    """

    name = "superglue"
    auto_precision = amp.AUTO_MATCHER

    def __init__(
        self,
        variant: str = "outdoor",
        descriptor_dim: int = 256,
        keypoint_encoder: Sequence[int] = (32, 64, 128, 256),
        gnn_layers: Sequence[str] = ("self", "cross") * 9,
        sinkhorn_iterations: int = 100,
        match_threshold: float = 0.2,
        num_heads: int = 4,
        precision: str = "fp32",
        weights_path: Optional[str | os.PathLike] = None,
        state_dict: Optional[dict[str, torch.Tensor]] = None,
        pretrained: bool = True,
    ) -> None:
        super().__init__()
        weights_name = self.weights_name(variant)
        if sinkhorn_iterations < 0:
            raise ConfigError(f"superglue: sinkhorn_iterations must be >= 0, got {sinkhorn_iterations}")
        self.variant = variant
        self.precision = amp.check(precision)
        self.descriptor_dim = int(descriptor_dim)
        self.sinkhorn_iterations = int(sinkhorn_iterations)
        self.match_threshold = float(match_threshold)
        if state_dict is None and pretrained:
            state_dict = weights.load_state_dict(weights_name, weights_path)
        if state_dict is not None:  # a trained checkpoint's depth (lightmatch train exports) is read from its keys
            depth = {int(k.split(".")[2]) for k in state_dict if k.startswith("gnn.layers.")}
            if depth and max(depth) + 1 != len(gnn_layers):
                gnn_layers = ("self", "cross") * ((max(depth) + 1) // 2)
        self.kenc = KeypointEncoder(self.descriptor_dim, list(keypoint_encoder))
        self.gnn = AttentionalGNN(self.descriptor_dim, list(gnn_layers), num_heads)
        self.final_proj = nn.Conv1d(self.descriptor_dim, self.descriptor_dim, kernel_size=1, bias=True)
        self.bin_score = nn.Parameter(torch.tensor(1.0))

        if state_dict is not None:
            # Checkpoints saved before PyTorch 0.4.1 lack the BatchNorm counters; they play no role in inference.
            counters = tuple(k for k in self.state_dict() if k.endswith("num_batches_tracked"))
            weights.load_into(self, state_dict, weights_name, str(weights_path or ""), ignore_missing=counters)
        self.eval()

    # ------------------------------------------------------------------ loading
    @staticmethod
    def weights_name(variant: str) -> str:
        """Registry name of the ``'indoor'`` / ``'outdoor'`` weights."""
        if variant not in VARIANTS:
            raise ConfigError(f"superglue: weights must be one of {', '.join(VARIANTS)}, got {variant!r}")
        return f"superglue_{variant}"

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor], path_hint: str = "", **opts) -> "SuperGlue":
        """Build with ``opts`` and load ``state`` strictly (a :class:`WeightsError` names missing/extra keys)."""
        return cls(state_dict=state, weights_path=path_hint or None, **opts)

    @classmethod
    def from_weights(cls, variant: str = "outdoor", path: Optional[str | os.PathLike] = None, **opts) -> "SuperGlue":
        """Load ``superglue_{variant}.pth`` from ``path`` or the weights resolution order."""
        return cls(variant=variant, weights_path=path, **opts)

    @property
    def num_layers(self) -> int:
        return len(self.gnn.layers)

    def matching_settings(self) -> dict:
        return {"sinkhorn_iterations": self.sinkhorn_iterations, "match_threshold": self.match_threshold}

    # ------------------------------------------------------------------ network
    def forward(
        self,
        kpts0: torch.Tensor,
        scores0: torch.Tensor,
        desc0: torch.Tensor,
        kpts1: torch.Tensor,
        scores1: torch.Tensor,
        desc1: torch.Tensor,
        size0: torch.Tensor,
        size1: torch.Tensor,
        mask0: Optional[torch.Tensor] = None,
        mask1: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Log assignment of a batch of pairs, padded to common keypoint counts with masks ``mask0`` ``(B, M)``,
        ``mask1`` ``(B, N)`` of real points (None: no padding). BatchNorm in training mode sees padded points:
        train with a fixed keypoint count.

        Args:
            kpts0: ``(B, M, 2)`` ``(x, y)`` pixels; scores0 ``(B, M)``; desc0 ``(B, M, D)``; size0 ``(B, 2)`` or
                ``(2,)`` image ``(W, H)``. Same for image 1 with ``N`` keypoints. ``M, N >= 1``.

        Returns:
            ``(B, M+1, N+1)`` float32 log assignment with dustbins (see :func:`log_optimal_transport`); train
            with the negative log-likelihood of the ground-truth assignment.
        """
        dtype = self.final_proj.weight.dtype
        k0 = normalize_keypoints(kpts0, size0, SUPERGLUE_EXTENT).to(dtype)
        k1 = normalize_keypoints(kpts1, size1, SUPERGLUE_EXTENT).to(dtype)
        d0 = desc0.transpose(1, 2).to(dtype) + self.kenc(k0, scores0.to(dtype))
        d1 = desc1.transpose(1, 2).to(dtype) + self.kenc(k1, scores1.to(dtype))
        d0, d1 = self.gnn(d0, d1, mask0, mask1)
        m0, m1 = self.final_proj(d0), self.final_proj(d1)
        sim = torch.einsum("bdn,bdm->bnm", m0, m1) / self.descriptor_dim ** 0.5
        return log_optimal_transport(sim, self.bin_score, self.sinkhorn_iterations, mask0, mask1)

    @torch.inference_mode()
    def match(self, feats0: Features, feats1: Features) -> Matches:
        """Match two images' SuperPoint features; keypoints are normalised by each image's ``image_size``."""
        n0, n1 = len(feats0), len(feats1)
        for f in (feats0, feats1):
            if n0 and n1 and f.descriptors.shape[-1] != self.descriptor_dim:
                raise ConfigError(f"superglue expects {self.descriptor_dim}-d descriptors (SuperPoint), "
                                  f"got {f.descriptors.shape[-1]}-d")
        device = self.device
        if n0 == 0 or n1 == 0:
            return Matches(torch.full((n0,), -1, dtype=torch.int64, device=device),
                           torch.zeros(n0, dtype=torch.float32, device=device), stop_layer=0)
        f0, f1 = feats0.to(device), feats1.to(device)
        with self.autocast(device):
            log_assign = self(
                f0.keypoints[None], f0.scores[None], f0.descriptors[None],
                f1.keypoints[None], f1.scores[None], f1.descriptors[None],
                torch.tensor(f0.image_size, device=device, dtype=torch.float32),
                torch.tensor(f1.image_size, device=device, dtype=torch.float32),
            )
        matches0, _, mscores0, _ = extract_matches(log_assign, self.match_threshold)
        scores0 = torch.where(matches0 > -1, mscores0, torch.zeros_like(mscores0))
        return Matches(matches0[0].to(torch.int64), scores0[0].float(), stop_layer=len(self.gnn.layers))

    @torch.inference_mode()
    def match_many(self, pairs: Sequence[tuple[Features, Features]]) -> list[Matches]:
        """Match several pairs in one batch padded to the largest keypoint counts, with masks: the matches of
        :meth:`match` pair by pair (scores equal up to float rounding)."""
        results: list[Optional[Matches]] = [None] * len(pairs)
        todo = [i for i, (f0, f1) in enumerate(pairs) if len(f0) and len(f1)]
        for i in sorted(set(range(len(pairs))) - set(todo)):
            results[i] = self.match(*pairs[i])
        if not todo:
            return results  # type: ignore[return-value]
        device = self.device
        sides = [[pairs[i][k].to(device) for i in todo] for k in (0, 1)]
        for feats in sides:
            if any(f.descriptors.shape[-1] != self.descriptor_dim for f in feats):
                raise ConfigError(f"superglue expects {self.descriptor_dim}-d descriptors (SuperPoint)")
        (k0, mask0), (k1, mask1) = [pad_stack([f.keypoints for f in feats]) for feats in sides]
        s0, s1 = [pad_stack([f.scores for f in feats])[0] for feats in sides]
        d0, d1 = [pad_stack([f.descriptors for f in feats])[0] for feats in sides]
        size0, size1 = [torch.tensor([f.image_size for f in feats], device=device, dtype=torch.float32)
                        for feats in sides]
        with self.autocast(device):
            log_assign = self(k0, s0, d0, k1, s1, d1, size0, size1, mask0, mask1)
        valid = F.pad(mask0, (0, 1), value=True)[:, :, None] & F.pad(mask1, (0, 1), value=True)[:, None, :]
        log_assign = log_assign.masked_fill(~valid, float("-inf"))
        matches0, _, mscores0, _ = extract_matches(log_assign, self.match_threshold)
        scores0 = torch.where(matches0 > -1, mscores0, torch.zeros_like(mscores0))
        for row, i in enumerate(todo):
            n = len(pairs[i][0])
            results[i] = Matches(matches0[row, :n].to(torch.int64), scores0[row, :n].float(),
                                 stop_layer=len(self.gnn.layers))
        return results  # type: ignore[return-value]
