"""Training losses (glue-factory's): balanced negative log-likelihood of the ground-truth assignment with
dustbins, every LightGlue layer supervised with the same weight, and the confidence head's binary cross-entropy."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..models.lightglue import LightGlue


def assignment_weights(assignment: torch.Tensor, matches0: torch.Tensor, matches1: torch.Tensor) -> torch.Tensor:
    """Target of the ``(B, M + 1, N + 1)`` log assignment: 1 at positive pairs, 1 in the dustbin column (row) of
    the unmatchable points of image 0 (image 1), 0 elsewhere (ignored and padded points)."""
    b, m, n = assignment.shape
    weights = assignment.new_zeros((b, m + 1, n + 1), dtype=torch.float32)
    weights[:, :m, :n] = assignment.float()
    weights[:, :m, n] = (matches0 == -1).float()
    weights[:, m, :n] = (matches1 == -1).float()
    return weights


def nll_loss(log_assignment: torch.Tensor, weights: torch.Tensor, balancing: float = 0.5) -> torch.Tensor:
    """``(B,)`` loss: ``balancing`` x mean NLL of the positives + (1 - ``balancing``) x mean NLL of the
    unmatchable points in the dustbins. Entries of zero weight (even -inf ones) do not count."""
    m, n = log_assignment.shape[1] - 1, log_assignment.shape[2] - 1
    weighted = torch.where(weights > 0, log_assignment.float() * weights, log_assignment.new_zeros(()).float())
    num_pos = weights[:, :m, :n].sum((1, 2)).clamp(min=1.0)
    num_neg = (weights[:, :m, n].sum(1) + weights[:, m, :n].sum(1)).clamp(min=1.0)
    nll_pos = -weighted[:, :m, :n].sum((1, 2)) / num_pos
    nll_neg = -(weighted[:, :m, n].sum(1) + weighted[:, m, :n].sum(1)) / num_neg
    return balancing * nll_pos + (1.0 - balancing) * nll_neg


def confidence_loss(logits: torch.Tensor, la_now: torch.Tensor, la_final: torch.Tensor,
                    mask: torch.Tensor) -> torch.Tensor:
    """``(B,)`` BCE of the confidence logits ``(B, 2, L)`` against "this layer's argmax (dustbin included) is the
    final layer's", averaged over each image's real points and over both images; targets are detached."""
    la_now, la_final = la_now.detach(), la_final.detach()
    same0 = la_now[:, :-1, :].argmax(2) == la_final[:, :-1, :].argmax(2)
    same1 = la_now[:, :, :-1].argmax(1) == la_final[:, :, :-1].argmax(1)
    target = torch.stack([same0, same1], 1).float()
    bce = F.binary_cross_entropy_with_logits(logits.float(), target, reduction="none")
    per_image = (bce * mask).sum(2) / mask.sum(2).clamp(min=1)
    return per_image.mean(1)


@dataclass
class LossTerms:
    """Per-pair ``(B,)`` losses: ``total`` (what is minimised), ``last`` (NLL of the final layer) and ``confidence``
    (0 for matchers without a confidence head); ``log_assignment`` ``(B, M + 1, N + 1)`` of the final layer."""

    total: torch.Tensor
    last: torch.Tensor
    confidence: torch.Tensor
    log_assignment: torch.Tensor


def lightglue_loss(model: LightGlue, states: list[torch.Tensor], mask: torch.Tensor, weights: torch.Tensor,
                   balancing: float = 0.5) -> LossTerms:
    """glue-factory's LightGlue loss from the token states of every layer (:meth:`LightGlue.forward`): the mean
    over layers of each layer's :func:`nll_loss` (all weights 1) plus the sum over layers but the last of the
    :func:`confidence_loss` (the heads are trained on detached tokens only, so the matcher is not affected)."""
    n = len(states)
    final = model.log_assignment[n - 1].log_assignment_batch(states[-1], mask)
    last = nll_loss(final, weights, balancing)
    total = last
    confidence = torch.zeros_like(last)
    for i in range(n - 1):
        la = model.log_assignment[i].log_assignment_batch(states[i], mask)
        total = total + nll_loss(la, weights, balancing)
        confidence = confidence + confidence_loss(model.token_confidence[i].logits(states[i]), la, final, mask)
    return LossTerms(total / n + confidence, last, confidence, final)


def superglue_loss(log_assignment: torch.Tensor, weights: torch.Tensor, balancing: float = 0.5) -> LossTerms:
    """SuperGlue: :func:`nll_loss` of the log-space Sinkhorn assignment with dustbins."""
    nll = nll_loss(log_assignment, weights, balancing)
    return LossTerms(nll, nll.detach(), torch.zeros_like(nll), log_assignment)
