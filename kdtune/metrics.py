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


def _gaps(bins: dict[str, list[float]]) -> list[tuple[float, float, float]]:
    """(weight |B|/n, accuracy, confidence) of every non-empty bin."""
    total = sum(bins["count"])
    return [(count / total, acc, conf)
            for count, acc, conf in zip(bins["count"], bins["accuracy"], bins["confidence"])
            if count > 0]  # fmt: skip


def ece(logits: Tensor, labels: Tensor, num_bins: int = DEFAULT_BINS) -> float:
    """Expected calibration error: sum over bins of |B|/n * |acc(B) - conf(B)|."""
    return sum(
        w * abs(acc - conf) for w, acc, conf in _gaps(reliability_bins(logits, labels, num_bins))
    )


def mce(logits: Tensor, labels: Tensor, num_bins: int = DEFAULT_BINS) -> float:
    """Maximum calibration error: the largest |acc(B) - conf(B)| over non-empty bins."""
    return max(
        abs(acc - conf) for _, acc, conf in _gaps(reliability_bins(logits, labels, num_bins))
    )


def rmsce(logits: Tensor, labels: Tensor, num_bins: int = DEFAULT_BINS) -> float:
    """Root-mean-square calibration error: sqrt(sum over bins of |B|/n * (acc - conf)^2)."""
    bins = _gaps(reliability_bins(logits, labels, num_bins))
    return math.sqrt(sum(w * (acc - conf) ** 2 for w, acc, conf in bins))


def oe(logits: Tensor, labels: Tensor, num_bins: int = DEFAULT_BINS) -> float:
    """Over-confidence error (Thulasidasan et al. 2019): sum over bins of
    |B|/n * conf(B) * max(conf(B) - acc(B), 0). Only over-confidence is penalised."""
    bins = _gaps(reliability_bins(logits, labels, num_bins))
    return sum(w * conf * max(conf - acc, 0.0) for w, acc, conf in bins)


def adaptive_ece(logits: Tensor, labels: Tensor, num_bins: int = DEFAULT_BINS) -> float:
    """ECE with equal-mass bins (the top-label "AdaECE" of Mukhoti et al. 2020): the samples,
    sorted by confidence, are split into `num_bins` groups of (nearly) equal size."""
    confidence, predicted = logits.float().softmax(dim=1).max(dim=1)
    order = confidence.argsort()
    correct = (predicted == labels).float()[order]
    confidence = confidence[order]
    n = len(confidence)
    return sum(len(c) / n * abs(a.mean().item() - c.mean().item())
               for c, a in zip(confidence.tensor_split(num_bins), correct.tensor_split(num_bins))
               if len(c) > 0)  # fmt: skip


def classwise_ece(logits: Tensor, labels: Tensor, num_bins: int = DEFAULT_BINS) -> float:
    """Static calibration error (SCE, Nixon et al. 2019): for every class k, equal-width bins over
    p_k of all samples, |B|/n * |freq(y = k in B) - mean p_k in B|, summed; averaged over
    classes."""
    probs = logits.float().softmax(dim=1)
    num_classes = probs.shape[1]
    total = 0.0
    for k in range(num_classes):
        p_k = probs[:, k]
        bin_index = (p_k * num_bins).long().clamp(max=num_bins - 1)
        conf = torch.bincount(bin_index, weights=p_k, minlength=num_bins)
        hits = torch.bincount(bin_index, weights=(labels == k).float(), minlength=num_bins)
        total += ((hits - conf).abs().sum() / len(labels)).item()
    return total / num_classes


def top_k_accuracy(logits: Tensor, labels: Tensor, k: int = 5) -> float:
    return (logits.topk(k, dim=1).indices == labels[:, None]).any(dim=1).float().mean().item()


def agreement(student_logits: Tensor, teacher_logits: Tensor) -> float:
    """Fraction of samples on which student and teacher predict the same class."""
    return accuracy(student_logits, teacher_logits.argmax(dim=1))


def kl_teacher_student(teacher_logits: Tensor, student_logits: Tensor) -> float:
    """KL(p_teacher || p_student) at T = 1, averaged over samples."""
    log_t, log_s = teacher_logits.float().log_softmax(1), student_logits.float().log_softmax(1)
    return (log_t.exp() * (log_t - log_s)).sum(1).mean().item()


def t_stddev(teacher_probs: Tensor, chunk_size: int = 640) -> float:
    """Good-DA-in-KD's T.stddev: split the teacher's probability vectors (in the order they were
    produced, clean and augmented batches together) into chunks of `chunk_size`, take each chunk's
    mean vector, then the unbiased std across chunks of each class, averaged over classes. A lower
    value predicts a lower student test loss. Needs at least two full chunks."""
    num_chunks = len(teacher_probs) // chunk_size
    if num_chunks < 2:
        raise ValueError(
            f"t_stddev needs >= {2 * chunk_size} probability vectors, got {len(teacher_probs)}"
        )
    means = (
        teacher_probs[: num_chunks * chunk_size].float().view(num_chunks, chunk_size, -1).mean(1)
    )
    return means.std(dim=0).mean().item()


def vicinal_linearity(
    probs_i: Tensor, probs_j: Tensor, probs_mixed: Tensor, lam: Tensor, num_bins: int = 20
) -> dict[str, float]:
    """Linearity in the vicinal region (Medina et al.): per pair, KL(lam p(x_i) + (1 - lam) p(x_j)
    || p(lam x_i + (1 - lam) x_j)); lower is more linear. Returns the mean over lambda bins (each
    of `num_bins` equal-width bins weighted equally, empty bins skipped) and the "peak" mean over
    lam in (0.45, 0.55)."""
    interpolated = lam[:, None] * probs_i + (1 - lam[:, None]) * probs_j
    kl = (
        interpolated * (interpolated.clamp_min(1e-12).log() - probs_mixed.clamp_min(1e-12).log())
    ).sum(1)
    bin_index = (lam * num_bins).long().clamp(max=num_bins - 1)
    per_bin = [kl[bin_index == b].mean().item() for b in range(num_bins) if (bin_index == b).any()]
    peak = kl[(lam > 0.45) & (lam < 0.55)]
    return {
        "mean": sum(per_bin) / len(per_bin),
        "peak": peak.mean().item() if len(peak) else float("nan"),
    }


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


SPLIT_METRICS = ("acc", "top5", "nll", "ece", "adaptive_ece", "classwise_ece", "mce", "rmsce",
                 "brier", "conf_gap", "oe")  # fmt: skip
# The worst value each bounded metric can take in the direction it is optimised (accuracy
# maximised, the rest minimised): a hypervolume's natural reference. NLL has no bound, and a
# signed confidence gap is no objective to minimise.
WORST = {"acc": 0.0, "top5": 0.0, "ece": 1.0, "adaptive_ece": 1.0, "classwise_ece": 1.0,
         "mce": 1.0, "rmsce": 1.0, "oe": 1.0, "brier": 2.0}  # fmt: skip


def worst_value(metric: str) -> float | None:
    """WORST of a reported name ("val_ece_ts" -> ece), or None where there is no bound."""
    name = metric.split("_", 1)[-1].removesuffix("_ts")
    return WORST.get(name)


def evaluate(logits: Tensor, labels: Tensor, num_bins: int = DEFAULT_BINS) -> dict[str, float]:
    """The scalar metrics every trial reports on one split (`top5` only with > 5 classes)."""
    results = {
        "acc": accuracy(logits, labels),
        "nll": nll(logits, labels),
        "ece": ece(logits, labels, num_bins),
        "adaptive_ece": adaptive_ece(logits, labels, num_bins),
        "classwise_ece": classwise_ece(logits, labels, num_bins),
        "mce": mce(logits, labels, num_bins),
        "rmsce": rmsce(logits, labels, num_bins),
        "brier": brier(logits, labels),
        "conf_gap": conf_gap(logits, labels),
        "oe": oe(logits, labels, num_bins),
    }
    if logits.shape[1] > 5:
        results["top5"] = top_k_accuracy(logits, labels, 5)
    return results
