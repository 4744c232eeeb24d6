"""Accuracy and calibration metrics: pure functions of logits and integer labels (CPU or GPU).

Conventions (METHODS.md section 7):
- confidence = max softmax probability at T = 1; metrics are fractions, not percentages;
- ECE uses equal-width bins [l, u) over [0, 1], the last bin closed at 1 (the Medina repository's
  convention), 15 bins unless told otherwise;
- Brier is the multi-class sum over classes of squared errors, averaged over samples (not / K).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

DEFAULT_BINS = 15


def accuracy(logits: Tensor, labels: Tensor) -> float:
    return (logits.argmax(dim=1) == labels).float().mean().item()


def nll(logits: Tensor, labels: Tensor) -> float:
    return F.cross_entropy(logits.float(), labels).item()


def brier(logits: Tensor, labels: Tensor) -> float:
    probs = logits.float().softmax(dim=1)
    one_hot = F.one_hot(labels, num_classes=probs.shape[1]).float()
    return ((probs - one_hot) ** 2).sum(dim=1).mean().item()


def conf_gap(logits: Tensor, labels: Tensor) -> float:
    """Mean confidence minus accuracy; > 0 means over-confident (the Medina repo's definition)."""
    confidence = logits.float().softmax(dim=1).max(dim=1).values
    return confidence.mean().item() - accuracy(logits, labels)


def reliability_bins(
    logits: Tensor, labels: Tensor, num_bins: int = DEFAULT_BINS
) -> dict[str, list[float]]:
    """Per-bin sample count, mean confidence and accuracy (empty bins have conf = acc = 0)."""
    probs = logits.float().softmax(dim=1)
    confidence, predicted = probs.max(dim=1)
    correct = (predicted == labels).float()
    bin_index = (confidence * num_bins).long().clamp(max=num_bins - 1)
    counts = torch.bincount(bin_index, minlength=num_bins).float()
    conf_sum = torch.bincount(bin_index, weights=confidence, minlength=num_bins)
    correct_sum = torch.bincount(bin_index, weights=correct, minlength=num_bins)
    safe = counts.clamp(min=1)
    return {
        "count": counts.tolist(),
        "confidence": (conf_sum / safe).tolist(),
        "accuracy": (correct_sum / safe).tolist(),
    }


def ece(logits: Tensor, labels: Tensor, num_bins: int = DEFAULT_BINS) -> float:
    """Expected calibration error: sum over bins of |B|/n * |acc(B) - conf(B)|."""
    bins = reliability_bins(logits, labels, num_bins)
    total = sum(bins["count"])
    return sum(
        count / total * abs(acc - conf)
        for count, acc, conf in zip(bins["count"], bins["accuracy"], bins["confidence"])
    )


def fit_temperature(logits: Tensor, labels: Tensor, max_iter: int = 100) -> float:
    """Post-hoc temperature scaling (Guo et al. 2017): the T > 0 minimising NLL of logits / T.

    Fit on the validation split only. Optimising log T keeps T positive without a constraint;
    the start value 1.5 is the reference implementation's.
    """
    logits = logits.detach().float()
    log_t = torch.tensor([math.log(1.5)], device=logits.device, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.exp().item())


SPLIT_METRICS = ("acc", "nll", "ece", "brier", "conf_gap")


def evaluate(logits: Tensor, labels: Tensor, num_bins: int = DEFAULT_BINS) -> dict[str, float]:
    """The scalar metrics every trial reports for one split."""
    return {
        "acc": accuracy(logits, labels),
        "nll": nll(logits, labels),
        "ece": ece(logits, labels, num_bins),
        "brier": brier(logits, labels),
        "conf_gap": conf_gap(logits, labels),
    }
