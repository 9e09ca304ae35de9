"""Our LightGlue-style matcher: a transformer over both images' keypoints with adaptive depth and width.

Architecture and parameter names follow LightGlue (Lindenberger et al., ICCV 2023) so the official checkpoints load
with ``strict=True``; the computation is reorganised for speed, with the same results:

* one forward for any number of pairs: the tokens of a batch of pairs live in one ``(B, M + N, D)`` tensor (image 0's
  ``M`` first, image 1's ``N`` after, each side padded to the batch's largest count, with a mask only when something
  is padded), so every linear layer is one matrix product for the batch (the reference runs each image separately);
  a single pair is a batch of one without padding or masks;
* the query/key/value projection is reordered once per forward into contiguous q, k, v blocks, and the rotary
  encoding is written in one pass, without the reference's layout copies;
* cross-attention computes the similarity in both orientations by a matrix product each, so both softmaxes run
  along the contiguous axis (the reference copies the transposed similarity), in blocks of query rows that stay in
  cache; the reference's matches exactly (scores within 1e-5, measured ~1e-6) at half the time;
* on CUDA, attention runs through ``scaled_dot_product_attention`` (flash) under fp16/bf16 autocast; on the CPU
  self-attention does in fp32, and under bf16/fp16 autocast both run blocked (:func:`attend`).

Adaptive depth: after each layer a per-token confidence decides whether enough points are settled to stop.
Adaptive width: points confidently unmatchable are dropped from later layers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .. import precision as amp
from .. import weights
from ..errors import ConfigError
from ..geometry import normalize_keypoints
from ..types import Features, Matches
from .base import Matcher
from .padding import compact_pairs, pad_stack


@dataclass(frozen=True)
class LightGlueVariant:
    """What distinguishes the checkpoints: descriptor size in, weights name, whether scale/orientation is encoded."""

    weights: str
    input_dim: int
    descriptor_dim: int = 256
    n_layers: int = 9
    num_heads: int = 4
    add_scale_ori: bool = False


VARIANTS: dict[str, LightGlueVariant] = {
    "aliked": LightGlueVariant("aliked_lightglue", 128),
    "disk": LightGlueVariant("disk_lightglue", 128),
    "superpoint": LightGlueVariant("superpoint_lightglue", 256),
    "sift": LightGlueVariant("sift_lightglue", 128, add_scale_ori=True),
}

# Pruning costs a gather per layer; it pays off only above this many points in an image. CUDA: the reference's value
# measured with flash attention (cvg/LightGlue's ``pruning_keypoint_thresholds["flash"]``; our CUDA path always runs
# ``scaled_dot_product_attention``), not re-measured here. Other device types (CPU, MPS) always prune.
PRUNING_MIN_POINTS = {"cuda": 1536}


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary encoding of ``(..., T, dh)``: channel pairs ``(2i, 2i+1)`` rotated by angle ``i``, with ``(T, dh)``
    interleaved factors from :func:`rotary_factors` (``cos = (c0, c0, c1, c1, ...)``, ``sin = (-s0, s0, -s1, ...)``):
    ``x * cos + swap(x) * sin`` where ``swap`` exchanges each pair. The same numbers as rotating the even and odd
    channels apart (``a - b`` is ``a + (-b)`` exactly), without elementwise passes over strided views (2-3x faster
    in bf16)."""
    return x * cos + x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2) * sin


def rotary_factors(angles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(T, dh/2)`` angles -> the interleaved ``(T, dh)`` cos and signed sin that :func:`apply_rotary` takes."""
    cos, sin = torch.cos(angles), torch.sin(angles)
    return cos.repeat_interleave(2, dim=-1), torch.stack([-sin, sin], dim=-1).flatten(-2)


class LearnableFourierPositionalEncoding(nn.Module):
    """Fourier features of the keypoint positions: cos/sin of a learned projection (the rotary frequencies)."""

    def __init__(self, in_dim: int, head_dim: int) -> None:
        super().__init__()
        self.Wr = nn.Linear(in_dim, head_dim // 2, bias=False)
        nn.init.normal_(self.Wr.weight.data, mean=0, std=1.0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(T, in_dim)`` -> the rotary factors (:func:`rotary_factors`), each ``(T, head_dim)``, in float32 also
        under autocast (angles of several radians in bf16 are off by up to 0.06 rad)."""
        with torch.autocast(x.device.type, enabled=False):
            return rotary_factors(self.Wr(x.float()))


class FusedWeights:
    """Weights derived from parameters (reordered or concatenated projections), rebuilt only when a parameter
    changes: cached in inference, recomputed every call while gradients flow (training)."""

    def __init__(self) -> None:
        self._key: tuple = ()
        self._value: tuple[torch.Tensor, torch.Tensor] | None = None

    def get(self, build, *params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if torch.is_grad_enabled():
            return build()
        key = tuple((p.data_ptr(), p._version, p.device, p.dtype) for p in params)
        if self._value is None or key != self._key:
            self._key, self._value = key, build()
        return self._value


def _ffn(dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(2 * dim, 2 * dim), nn.LayerNorm(2 * dim, elementwise_affine=True), nn.GELU(),
                         nn.Linear(2 * dim, dim))


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: Optional[torch.Tensor] = None,
           scale: Optional[float] = None, exact: bool = False) -> torch.Tensor:
    """Softmax attention ``softmax(scale q k^T) v`` of ``(..., Tq, dh)`` queries over ``(..., Tk, dh)`` keys/values
    (``scale`` None: ``dh ** -0.5``); ``key_mask`` (broadcast to ``(..., Tq, Tk)``, True: attend) leaves out padded
    keys. The blocked product (:func:`blocked_attention`) runs off CUDA where ``exact`` asks for the reference's
    rounding (cross-attention: its scores within 1e-5 of the reference's, ``scaled_dot_product_attention`` gives
    7e-5 on the CPU), and on the CPU under reduced-precision autocast (1.3-2.2x faster than the CPU flash kernel in
    bf16); ``scaled_dot_product_attention`` (flash) everywhere else."""
    if q.shape[-2] == 0 or k.shape[-2] == 0:
        return q.new_zeros(q.shape[:-1] + (v.shape[-1],))
    device = q.device.type
    if (exact and device != "cuda") or (device == "cpu" and torch.is_autocast_enabled("cpu")):
        scale = q.shape[-1] ** -0.5 if scale is None else scale
        return blocked_attention(q if scale == 1.0 else q * scale, k, v, key_mask)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, scale=scale)


def blocked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: Optional[torch.Tensor] = None,
                      block_bytes: int = 1 << 22) -> torch.Tensor:
    """Unscaled softmax attention ``softmax(q k^T) v`` of ``(..., Tq, dh)`` over ``(..., Tk, dh)``, computed in
    blocks of query rows whose similarity stays in cache (~4 MiB): the same numbers as the unblocked product, about
    twice as fast on the CPU as materialising the whole similarity. ``key_mask`` (broadcast to ``(..., Tq, Tk)``,
    True: attend) leaves out padded keys."""
    rows = max(16, block_bytes // max(1, 4 * q.shape[:-2].numel() * k.shape[-2]))
    kt = k.transpose(-1, -2)
    if torch.is_autocast_enabled(q.device.type):  # cast once here, not once per block (the same numbers)
        dtype = torch.get_autocast_dtype(q.device.type)
        # contiguous once: the reduced-precision matmul would copy the strided kt and v for every block (fp32's
        # kernel takes the strides as they are)
        q, kt, v = q.to(dtype), kt.to(dtype).contiguous(), v.to(dtype).contiguous()
    padded = None if key_mask is None else ~key_mask

    def block(qb: torch.Tensor) -> torch.Tensor:
        sim = torch.matmul(qb, kt)
        if padded is not None:
            sim = sim.masked_fill(padded, float("-inf"))
        return torch.matmul(sim.softmax(-1), v)

    if rows >= q.shape[-2]:
        return block(q)
    return torch.cat([block(q[..., i:i + rows, :]) for i in range(0, q.shape[-2], rows)], dim=-2)


def _side_masks(mask: Optional[torch.Tensor], split: int) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """Key masks ``(B, 1, 1, L_i)`` of image 0 and image 1 from the ``(B, T)`` token mask (None: nothing padded)."""
    if mask is None:
        return None, None
    return mask[:, None, None, :split], mask[:, None, None, split:]


class SelfBlock(nn.Module):
    """Self-attention within each image with rotary positional encoding, then a residual MLP."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.Wqkv = nn.Linear(dim, 3 * dim)
        self.out_proj = nn.Linear(dim, dim)
        self.ffn = _ffn(dim)
        # Official Wqkv rows are ordered (head, channel, q/k/v); reorder them into contiguous q, k, v blocks.
        order = torch.arange(3 * dim).view(num_heads, self.head_dim, 3).permute(2, 0, 1).reshape(-1)
        self.register_buffer("qkv_order", order, persistent=False)
        self._fused = FusedWeights()

    def forward(self, x: torch.Tensor, split: int, cos: torch.Tensor, sin: torch.Tensor,
                mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``x`` ``(B, M + N, D)`` tokens of pairs (image 0's first, ``split`` = M), cos/sin ``(B, M + N, dh)``,
        ``mask`` ``(B, M + N)`` the real tokens (None: nothing padded; padding is not attended to). Every image
        needs at least one valid token."""
        b, t, d = x.shape
        weight, bias = self._fused.get(lambda: (self.Wqkv.weight[self.qkv_order], self.Wqkv.bias[self.qkv_order]),
                                       self.Wqkv.weight, self.Wqkv.bias)
        qkv = F.linear(x, weight, bias).view(b, t, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        cos, sin = cos[:, None].to(qkv.dtype), sin[:, None].to(qkv.dtype)  # factors in the compute dtype
        q, k, v = apply_rotary(qkv[0], cos, sin), apply_rotary(qkv[1], cos, sin), qkv[2]  # (B, H, T, dh)
        if 2 * split == t:  # equal sizes: both images in one batched call
            def images(z: torch.Tensor) -> torch.Tensor:
                return z.unflatten(2, (2, split)).transpose(1, 2).flatten(0, 1)  # (2B, H, M, dh)
            key_mask = None if mask is None else mask.reshape(2 * b, 1, 1, split)
            context = attend(images(q), images(k), images(v), key_mask)
            context = context.unflatten(0, (b, 2)).transpose(1, 2).flatten(2, 3)
        else:
            mask0, mask1 = _side_masks(mask, split)
            context = torch.cat([attend(q[..., :split, :], k[..., :split, :], v[..., :split, :], mask0),
                                 attend(q[..., split:, :], k[..., split:, :], v[..., split:, :], mask1)], dim=2)
        message = self.out_proj(context.transpose(1, 2).reshape(b, t, d))
        return x + self.ffn(torch.cat([x, message], -1))


class CrossBlock(nn.Module):
    """Bidirectional cross-attention between the images (shared similarity), then a residual MLP."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.heads = num_heads
        self.head_dim = dim // num_heads
        self.to_qk = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        self.to_out = nn.Linear(dim, dim)
        self.ffn = _ffn(dim)
        self._fused = FusedWeights()

    def forward(self, x: torch.Tensor, split: int, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``x`` ``(B, M + N, D)`` tokens of pairs (image 0's first, ``split`` = M), ``mask`` ``(B, M + N)`` the real
        tokens (None: nothing padded; padding is not attended to)."""
        b, t, d = x.shape
        weight, bias = self._fused.get(
            lambda: (torch.cat([self.to_qk.weight, self.to_v.weight]), torch.cat([self.to_qk.bias, self.to_v.bias])),
            self.to_qk.weight, self.to_v.weight, self.to_qk.bias, self.to_v.bias)
        if split == 0 or split == t:
            message = x.new_zeros((b, t, d))
        else:
            qkv = F.linear(x, weight, bias).view(b, t, 2, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
            qk0, qk1 = qkv[0][..., :split, :], qkv[0][..., split:, :]  # (B, H, M | N, dh)
            v0, v1 = qkv[1][..., :split, :], qkv[1][..., split:, :]
            mask0, mask1 = _side_masks(mask, split)
            s = self.head_dim ** -0.25  # scale both sides, as the reference does (same rounding)
            qk0, qk1 = qk0 * s, qk1 * s
            m0 = attend(qk0, qk1, v1, mask1, scale=1.0, exact=True)
            m1 = attend(qk1, qk0, v0, mask0, scale=1.0, exact=True)
            message = self.to_out(torch.cat([m0, m1], dim=2).transpose(1, 2).reshape(b, t, d))
        return x + self.ffn(torch.cat([x, message], -1))


def attendable(mask: torch.Tensor) -> torch.Tensor:
    """Key mask ``(..., L)`` in which an image without any point attends to all its (padded) tokens, so no softmax
    runs over nothing (NaN, also in gradients); those tokens' results are never used."""
    return mask | ~mask.any(-1, keepdim=True)


class TransformerLayer(nn.Module):
    """One self-attention block then one cross-attention block."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.self_attn = SelfBlock(dim, num_heads)
        self.cross_attn = CrossBlock(dim, num_heads)

    def forward(self, x: torch.Tensor, split: int, cos: torch.Tensor, sin: torch.Tensor,
                mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Tokens ``(B, M + N, D)`` of pairs (``split`` = M) with their rotary factors and mask (None: no padding)."""
        return self.cross_attn(self.self_attn(x, split, cos, sin, mask), split, mask)


class MatchAssignment(nn.Module):
    """Matchability of each point and the projected descriptors whose similarity gives the assignment."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.matchability = nn.Linear(dim, 1, bias=True)
        self.final_proj = nn.Linear(dim, dim, bias=True)

    def log_scores(self, x: torch.Tensor, split: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Pair log-probabilities ``(M, N)`` (dual softmax + matchability) and the dustbin log-probabilities
        ``(M,)``, ``(N,)``: the assignment matrix without materialising its extra row/column."""
        md = self.final_proj(x)
        md = md / md.shape[-1] ** 0.25
        sim = md[:split] @ md[split:].transpose(0, 1)
        z = self.matchability(x)[:, 0]
        z0, z1 = z[:split], z[split:]
        scores = sim.log_softmax(1) + sim.log_softmax(0) + F.logsigmoid(z0)[:, None] + F.logsigmoid(z1)[None]
        return scores, F.logsigmoid(-z0), F.logsigmoid(-z1)

    def log_assignment_batch(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Padded pairs ``x`` ``(B, 2, L, D)``, ``mask`` ``(B, 2, L)`` -> ``(B, L + 1, L + 1)`` log-assignment with
        the dustbins in the last row/column (the training target's layout); entries of padded points are -inf,
        their dustbin entries are finite. Computed in float32."""
        mask = attendable(mask)
        md = self.final_proj(x).float()
        md = md / md.shape[-1] ** 0.25
        sim = md[:, 0] @ md[:, 1].transpose(-1, -2)
        ninf = sim.new_tensor(float("-inf"))
        z = self.matchability(x).float()[..., 0]
        scores = (torch.where(mask[:, 1, None, :], sim, ninf).log_softmax(2)
                  + torch.where(mask[:, 0, :, None], sim, ninf).log_softmax(1)
                  + F.logsigmoid(z[:, 0])[:, :, None] + F.logsigmoid(z[:, 1])[:, None, :])
        dust = F.logsigmoid(-z)
        full = F.pad(scores, (0, 1, 0, 1))
        full[:, :-1, -1] = dust[:, 0]
        full[:, -1, :-1] = dust[:, 1]
        return full

    def get_matchability(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., T)`` probability that each point has a match."""
        return torch.sigmoid(self.matchability(x))[..., 0]


class TokenConfidence(nn.Module):
    """Per-point confidence that its prediction will not change in later layers."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.token = nn.Sequential(nn.Linear(dim, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., T, D)`` tokens -> ``(..., T)`` confidences (no gradient reaches the tokens)."""
        return self.token(x.detach())[..., 0]

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., T)`` confidence logits (before the sigmoid), for the training loss."""
        return self.token[0](x.detach())[..., 0]


def filter_matches(scores: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                      torch.Tensor]:
    """Mutual best matches of ``(M, N)`` log-probabilities with probability above ``threshold``.

    Returns matches0 ``(M,)``, matches1 ``(N,)`` (index or -1) and their probabilities (0 where not mutual).
    """
    max0, max1 = scores.max(1), scores.max(0)
    m0, m1 = max0.indices, max1.indices
    mutual0 = torch.arange(len(m0), device=m0.device) == m1[m0]
    mutual1 = torch.arange(len(m1), device=m1.device) == m0[m1]
    zero = scores.new_tensor(0)
    mscores0 = torch.where(mutual0, max0.values.exp(), zero)
    mscores1 = torch.where(mutual1, mscores0[m1], zero)
    valid0 = mutual0 & (mscores0 > threshold)
    valid1 = mutual1 & valid0[m1]
    return torch.where(valid0, m0, -1), torch.where(valid1, m1, -1), mscores0, mscores1


@dataclass
class PaddedPairs:
    """``B`` pairs, both images padded to ``L`` points.

    Attributes:
        positions: ``(B, 2, L, P)`` normalised keypoint positions (``P`` = 2, or 4 with scale and orientation).
        descriptors: ``(B, 2, L, D_in)``.
        mask: ``(B, 2, L)`` True for real points.
    """

    positions: torch.Tensor
    descriptors: torch.Tensor
    mask: torch.Tensor

    def to(self, device: torch.device | str) -> "PaddedPairs":
        return PaddedPairs(self.positions.to(device), self.descriptors.to(device), self.mask.to(device))


class LightGlue(Matcher):
    """LightGlue matcher for one feature type.

    Args:
        features: ``aliked``, ``disk``, ``superpoint`` or ``sift`` (picks the checkpoint and input size), or a
            :class:`LightGlueVariant` for other checkpoints (e.g. LighterGlue).
        depth_confidence: early-exit ratio of confident points (``-1`` disables adaptive depth).
        width_confidence: pruning threshold on matchability (``-1`` disables adaptive width).
        filter_threshold: minimum match probability.
        precision: ``auto`` (fp16 on CUDA, fp32 on CPU), ``fp32``, ``fp16`` or ``bf16``.
        weights_path: explicit checkpoint; default: the registry's file for the feature type.
        state_dict: an already loaded checkpoint (skips file resolution).
        compile: compile the transformer layers with ``torch.compile`` (dynamic shapes; pays off on CUDA).
        pretrained: load weights (default); False keeps the random initialisation (training from scratch).

    A checkpoint's depth and sizes (layers, input and token dimensions, scale/orientation encoding) are read from
    its keys, so a trained model with another depth (``lightmatch train`` exports) loads by its path alone.
    """

    name = "lightglue"
    auto_precision = amp.AUTO_MATCHER

    def __init__(self, features: str | LightGlueVariant = "aliked", depth_confidence: float = 0.95,
                 width_confidence: float = 0.99, filter_threshold: float = 0.1, precision: str = "auto",
                 weights_path: Optional[str] = None, state_dict: Optional[dict] = None, compile: bool = False,
                 pretrained: bool = True) -> None:
        super().__init__()
        if isinstance(features, str):
            if features not in VARIANTS:
                raise ConfigError(f"LightGlue has no weights for features '{features}': "
                                  f"choose from {', '.join(VARIANTS)}")
            variant = VARIANTS[features]
        else:
            variant = features
        amp.check(precision)
        if state_dict is None and pretrained:
            state_dict = weights.load_state_dict(variant.weights, weights_path)
        if state_dict is not None:
            variant = variant_of_checkpoint(variant, state_dict)
        self.variant = variant
        self.depth_confidence = depth_confidence
        self.width_confidence = width_confidence
        self.filter_threshold = filter_threshold
        self.precision = precision
        d, h, n = variant.descriptor_dim, variant.num_heads, variant.n_layers
        self.input_proj = nn.Linear(variant.input_dim, d) if variant.input_dim != d else nn.Identity()
        self.posenc = LearnableFourierPositionalEncoding(2 + 2 * variant.add_scale_ori, d // h)
        self.transformers = nn.ModuleList([TransformerLayer(d, h) for _ in range(n)])
        self.log_assignment = nn.ModuleList([MatchAssignment(d) for _ in range(n)])
        self.token_confidence = nn.ModuleList([TokenConfidence(d) for _ in range(n - 1)])
        thresholds = [min(max(0.8 + 0.1 * math.exp(-4.0 * i / n), 0.0), 1.0) for i in range(n)]
        self.register_buffer("confidence_thresholds", torch.tensor(thresholds), persistent=False)
        if state_dict is not None:
            weights.load_into(self, _rename_legacy_keys(state_dict, n), variant.weights, str(weights_path or ""))
        self.eval()
        if compile:
            for layer in self.transformers:
                layer.forward = torch.compile(layer.forward, dynamic=True)

    @property
    def num_layers(self) -> int:
        return len(self.transformers)

    def matching_settings(self) -> dict:
        return {"depth_confidence": self.depth_confidence, "width_confidence": self.width_confidence,
                "filter_threshold": self.filter_threshold}

    def pruning_min_points(self, device: torch.device) -> int:
        """Pruning is only worth its overhead above this many points in an image on ``device`` (-1: always)."""
        return PRUNING_MIN_POINTS.get(device.type, -1)

    def should_stop(self, confidence: torch.Tensor, layer: int, num_points: int | torch.Tensor,
                    mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Early exit: the share of confident points (pruned points count as confident) exceeds depth_confidence.

        ``confidence`` ``(..., T)`` of a pair's tokens left after ``layer``, ``mask`` ``(..., T)`` the real ones
        among them (None: all), ``num_points`` ``(...)`` the pair's points before pruning. Returns ``(...)`` bools.
        """
        unconfident = confidence < self.confidence_thresholds[layer]
        if mask is not None:
            unconfident &= mask
        return 1.0 - unconfident.sum(-1) / num_points > self.depth_confidence

    def prune_mask(self, matchability: torch.Tensor, confidence: Optional[torch.Tensor], layer: int) -> torch.Tensor:
        """Points to keep: matchable enough, or not yet confident (low-confidence points are never pruned)."""
        keep = matchability > (1 - self.width_confidence)
        if confidence is not None:
            keep |= confidence <= self.confidence_thresholds[layer]
        return keep

    def match(self, feats0: Features, feats1: Features) -> Matches:
        """Match image 0's features to image 1's: :meth:`match_many` of this one pair (a batch of one, neither
        padded nor masked)."""
        return self.match_many([(feats0, feats1)])[0]

    @torch.inference_mode()
    def match_many(self, pairs: Sequence[tuple[Features, Features]]) -> list[Matches]:
        """Match pairs in one batch, each image side padded to the batch's largest count and masked: each pair's
        matches as matched alone (scores equal up to float rounding), early exit and pruning decided per pair;
        finished pairs leave the batch."""
        device = self.device
        results: list[Optional[Matches]] = [None] * len(pairs)
        todo = []
        for i, (f0, f1) in enumerate(pairs):
            if len(f0) and len(f1):
                todo.append(i)
            else:
                results[i] = Matches(torch.full((len(f0),), -1, dtype=torch.long, device=device),
                                     torch.zeros((len(f0),), device=device), stop_layer=0,
                                     info={"pruned0": 0, "pruned1": 0})
        if todo:
            with self.autocast(device):
                found = self._forward([(pairs[i][0].to(device), pairs[i][1].to(device)) for i in todo])
            for i, matches in zip(todo, found):
                results[i] = matches
        return results  # type: ignore[return-value]

    def _check_descriptors(self, feats: Sequence[Features]) -> None:
        for f in feats:
            if f.descriptors.shape[-1] != self.variant.input_dim:
                raise ConfigError(f"LightGlue '{self.variant.weights}' expects {self.variant.input_dim}-d "
                                  f"descriptors, got {f.descriptors.shape[-1]}-d")

    def _encode_positions(self, feats: Features) -> torch.Tensor:
        size = torch.tensor(feats.image_size, device=feats.device, dtype=torch.float32)
        kpts = normalize_keypoints(feats.keypoints.float(), size)
        if self.variant.add_scale_ori:
            if feats.scales is None or feats.oris is None:
                raise ConfigError("this LightGlue variant needs keypoint scales and orientations (SIFT features)")
            kpts = torch.cat([kpts, feats.scales[:, None], feats.oris[:, None]], -1)
        return kpts

    def _pad_images(self, feats: Sequence[Features],
                    length: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Positions ``(B, L, P)``, descriptors ``(B, L, D_in)`` and mask ``(B, L)`` of images padded to ``length``
        points (default: the largest count)."""
        self._check_descriptors(feats)
        positions, mask = pad_stack([self._encode_positions(f) for f in feats], length)
        descriptors, _ = pad_stack([f.descriptors.float() for f in feats], length)
        return positions, descriptors, mask

    def _forward(self, pairs: Sequence[tuple[Features, Features]]) -> list[Matches]:
        """The inference forward of non-empty pairs on the model's device: tokens ``(B, L0 + L1, D)``, image 0's
        padded to ``L0`` (= split), image 1's to ``L1``, a mask only while something is padded. After each layer
        :meth:`_adapt` decides which pairs stop and which points are pruned; stopped pairs leave the batch and
        pruned points are cut (:func:`compact_pairs`)."""
        sides = [self._pad_images([pair[k] for pair in pairs]) for k in (0, 1)]
        split = sides[0][2].shape[1]
        positions, descriptors, full_mask = (torch.cat(parts, 1) for parts in zip(*sides))
        device = full_mask.device
        x = self.input_proj(descriptors)
        cos, sin = self.posenc(positions)
        index = torch.cat([torch.arange(split, device=device),
                           torch.arange(full_mask.shape[1] - split, device=device)]).expand(full_mask.shape)
        mask, split, x, cos, sin, index = compact_pairs(full_mask, split, x, cos, sin, index)  # None if unpadded
        sizes = [(len(f0), len(f1)) for f0, f1 in pairs]
        totals = torch.tensor([m + n for m, n in sizes], device=device)
        active = list(range(len(pairs)))  # the pair of each row of the batch
        results: list[Optional[Matches]] = [None] * len(pairs)
        last = len(self.transformers) - 1
        for i, layer in enumerate(self.transformers):
            x = layer(x, split, cos, sin, mask)
            if i == last:
                done, kept = torch.ones(len(active), dtype=torch.bool, device=device), mask
            else:
                done, kept = self._adapt(x, i, split, mask, totals)
            finished = done.nonzero()[:, 0].tolist()
            for row in finished:
                results[active[row]] = self._final_matches(x[row], split, index[row],
                                                           None if kept is None else kept[row], *sizes[active[row]], i)
            if len(finished) == len(active):
                break
            if finished:
                left = ~done
                active = [a for a, stop in zip(active, done.tolist()) if not stop]
                x, cos, sin, index, totals = x[left], cos[left], sin[left], index[left], totals[left]
                kept = None if kept is None else kept[left]
            mask = kept
            if kept is not None:
                mask, split, x, cos, sin, index = compact_pairs(kept, split, x, cos, sin, index)
        return results  # type: ignore[return-value]

    def _adapt(self, x: torch.Tensor, layer: int, split: int, mask: Optional[torch.Tensor],
               num_points: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """After ``layer``, for tokens ``x`` ``(B, T, D)`` (mask ``(B, T)``, None: all real) of pairs with
        ``num_points`` ``(B,)`` points before pruning: which pairs stop ``(B,)`` (:meth:`should_stop`, or an image
        left without points) and the points kept ``(B, T)`` (:meth:`prune_mask`, where an image has more than
        :meth:`pruning_min_points`; unchanged for the pairs that stop; ``mask`` itself when nothing is pruned)."""
        b, t = x.shape[:2]
        confidence = None
        done = torch.zeros(b, dtype=torch.bool, device=x.device)
        if self.depth_confidence > 0:
            confidence = self.token_confidence[layer](x)
            done = self.should_stop(confidence, layer, num_points, mask)
        prune_min = self.pruning_min_points(x.device)
        if self.width_confidence <= 0 or max(split, t - split) <= prune_min or bool(done.all()):
            return done, mask
        keep = self.prune_mask(self.log_assignment[layer].get_matchability(x), confidence, layer)
        if prune_min >= 0:  # images with few points keep them all
            valid = torch.ones_like(keep) if mask is None else mask
            keep[:, :split] |= valid[:, :split].sum(-1, keepdim=True) <= prune_min
            keep[:, split:] |= valid[:, split:].sum(-1, keepdim=True) <= prune_min
        keep |= done[:, None]
        kept = keep if mask is None else mask & keep
        return done | ~kept[:, :split].any(-1) | ~kept[:, split:].any(-1), kept

    def _final_matches(self, x: torch.Tensor, split: int, index: torch.Tensor, mask: Optional[torch.Tensor], m: int,
                       n: int, layer: int) -> Matches:
        """Matches from one pair's tokens ``x`` ``(T, D)`` after ``layer`` (image 0's first, ``split`` of them), of
        which ``mask`` ``(T,)`` are real (None: all); ``index`` ``(T,)`` their indices among the pair's ``m`` and
        ``n`` points."""
        ind0, ind1 = index[:split], index[split:]
        if mask is not None:
            ind0, ind1, x = ind0[mask[:split]], ind1[mask[split:]], x[mask]
        device = x.device
        m0 = torch.full((m,), -1, dtype=torch.long, device=device)
        s0 = torch.zeros((m,), dtype=torch.float32, device=device)
        if len(ind0) and len(ind1):
            scores, _, _ = self.log_assignment[layer].log_scores(x, len(ind0))
            pm0, _, ps0, _ = filter_matches(scores.float(), self.filter_threshold)
            m0[ind0] = torch.where(pm0 == -1, -1, ind1[pm0.clamp(min=0)])
            s0[ind0] = ps0
        return Matches(m0, s0, stop_layer=layer + 1,
                       info={"pruned0": m - len(ind0), "pruned1": n - len(ind1)})

    # ------------------------------------------------------------------ training
    def pad_pairs(self, pairs: Sequence[tuple[Features, Features]], length: Optional[int] = None) -> PaddedPairs:
        """Encode the positions of ``pairs`` and pad both images of every pair to ``length`` points (default: the
        largest count in the batch)."""
        positions, descriptors, mask = self._pad_images([f for pair in pairs for f in pair], length)
        b = len(pairs)
        return PaddedPairs(positions.view(b, 2, *positions.shape[1:]), descriptors.view(b, 2, *descriptors.shape[1:]),
                           mask.view(b, 2, -1))

    def forward(self, batch: PaddedPairs, checkpointing: bool = False) -> list[torch.Tensor]:
        """Token states ``(B, 2, L, D)`` after every layer, all layers run (no adaptivity): the training forward,
        through the same layers as :meth:`match_many` (both images' ``L`` tokens in one row, masked).

        ``checkpointing`` recomputes each layer's activations in the backward pass instead of storing them.
        Heads: :meth:`MatchAssignment.log_assignment_batch` and :meth:`TokenConfidence.logits` of each layer.
        """
        b, _, length = batch.mask.shape
        x = self.input_proj(batch.descriptors).flatten(1, 2)
        cos, sin = (f.flatten(1, 2) for f in self.posenc(batch.positions))
        mask = attendable(batch.mask).flatten(1)
        states = []
        for layer in self.transformers:
            if checkpointing and torch.is_grad_enabled():
                x = checkpoint(layer, x, length, cos, sin, mask, use_reentrant=False)
            else:
                x = layer(x, length, cos, sin, mask)
            states.append(x.view(b, 2, length, -1))
        return states


def variant_of_checkpoint(variant: LightGlueVariant, state: dict[str, torch.Tensor]) -> LightGlueVariant:
    """``variant`` with the depth and sizes of checkpoint ``state`` (read from its keys and shapes); the weights
    name and the number of heads stay ``variant``'s."""
    layers = {int(k.split(".")[1]) for k in state
              if k.startswith(("transformers.", "self_attn.")) and k.split(".")[1].isdigit()}
    if not layers:
        return variant
    proj = state.get("log_assignment.0.final_proj.weight")
    dim = int(proj.shape[0]) if proj is not None else variant.descriptor_dim
    input_proj = state.get("input_proj.weight")
    posenc = state.get("posenc.Wr.weight")
    return replace(variant, n_layers=max(layers) + 1, descriptor_dim=dim,
                   input_dim=int(input_proj.shape[1]) if input_proj is not None else dim,
                   add_scale_ori=bool(posenc.shape[1] == 4) if posenc is not None else variant.add_scale_ori)


def _rename_legacy_keys(state: dict[str, torch.Tensor], n_layers: int) -> dict[str, torch.Tensor]:
    """Map older official checkpoints onto the current names.

    Old LightGlue checkpoints name layers ``self_attn.i`` / ``cross_attn.i`` (now ``transformers.i.*``), and
    ``disk_lightglue`` still carries ``log_assignment.i.r``, an unused scalar (always 1) of an earlier assignment
    head, which the architecture no longer has: it is dropped. ``confidence_thresholds`` (the early-exit thresholds,
    a buffer the reference saves in ``state_dict()`` and our training export writes so that the reference loads it
    strictly) is dropped too: it is computed from the depth, not learned. Everything else must match exactly.
    """
    renamed = {}
    for key, value in state.items():
        if key == "confidence_thresholds" or (key.startswith("log_assignment.") and key.endswith(".r")
                                              and value.numel() == 1):
            continue
        for i in range(n_layers):
            for kind in ("self_attn", "cross_attn"):
                prefix = f"{kind}.{i}."
                if key.startswith(prefix):
                    key = f"transformers.{i}.{kind}." + key[len(prefix):]
        renamed[key] = value
    return renamed
