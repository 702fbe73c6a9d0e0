"""Choosing an emotion cascade's threshold: how often the fast stage defers, and what that costs in accuracy.

A cascade (`emotion-ai-train export RUN --fallback VERSION --defer-below P`) answers each face with the fast
stage's scores when their top score is at least P, and with the fallback's otherwise. Given both stages'
scores on the validation split, `curve` measures every candidate P at once, and `cross_fitted` checks a
choice honestly: P is picked on one half of the split and measured on the other, in both directions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from emotion_ai_training.evaluate import emotion_report

#: Candidate thresholds (top score of the fast stage) that `cascade-curve` measures by default.
DEFAULT_THRESHOLDS = tuple(float(t) for t in np.round(np.arange(0.30, 1.0001, 0.025), 3))


def cascade_scores(fast: np.ndarray, fallback: np.ndarray, defer_below: float) -> np.ndarray:
    """The cascade's scores: `fast`'s rows, except those whose top score is below `defer_below`."""
    deferred = fast.max(axis=1) < defer_below
    return np.where(deferred[:, None], fallback, fast)


@dataclass(frozen=True)
class CurvePoint:
    defer_below: float
    deferred_fraction: float
    accuracy: float
    macro_f1: float
    disgust_recall: float | None


def accuracy(scores: np.ndarray, y: np.ndarray) -> float:
    return float((scores.argmax(1) == y).mean())


def curve(fast: np.ndarray, fallback: np.ndarray, y: np.ndarray, labels: tuple[str, ...],
          thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS) -> list[CurvePoint]:
    """Accuracy, macro-F1, disgust recall and the fraction deferred, for each threshold. `y` holds class
    indices in the scores' column order, whose names are `labels`."""
    points = []
    for t in thresholds:
        report = emotion_report(cascade_scores(fast, fallback, t), y, labels, labels)
        points.append(CurvePoint(t, float((fast.max(axis=1) < t).mean()), report["accuracy"], report["macro_f1"],
                                 report["disgust_recall"]))
    return points


def lowest_threshold(fast: np.ndarray, fallback: np.ndarray, y: np.ndarray, target: float,
                     thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS) -> float | None:
    """The lowest threshold (fewest faces deferred) whose accuracy on (fast, fallback, y) reaches `target`;
    None if none does. `y` holds class indices in the scores' column order."""
    for t in sorted(thresholds):
        if accuracy(cascade_scores(fast, fallback, t), y) >= target:
            return t
    return None


def cross_fitted(fast: np.ndarray, fallback: np.ndarray, y: np.ndarray,
                 thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS, seed: int = 0) -> list[dict]:
    """Pick the threshold on one random half (the lowest matching the fallback's accuracy there) and
    measure it on the other half, in both directions: the choice's accuracy on faces it was not made on."""
    order = np.random.default_rng(seed).permutation(len(y))
    halves = np.array_split(order, 2)
    folds = []
    for pick, test in (halves, halves[::-1]):
        target = accuracy(fallback[pick], y[pick])
        t = lowest_threshold(fast[pick], fallback[pick], y[pick], target, thresholds)
        t = max(thresholds) if t is None else t
        folds.append({
            "defer_below": t, "images": len(test),
            "accuracy": accuracy(cascade_scores(fast[test], fallback[test], t), y[test]),
            "fallback_accuracy": accuracy(fallback[test], y[test]),
            "deferred_fraction": float((fast[test].max(axis=1) < t).mean()),
        })
    return folds


def markdown(points: list[CurvePoint], fast_name: str, fallback_name: str, fallback_accuracy: float,
             fast_accuracy: float, folds: list[dict]) -> str:
    lines = [f"# Cascade: {fast_name} first, {fallback_name} for the faces it is unsure of", "",
             f"FER-2013 PublicTest. The fast stage alone: accuracy {fast_accuracy:.4f}; the fallback alone: "
             f"{fallback_accuracy:.4f}.", "",
             "| defer below (top score) | faces deferred | accuracy | macro-F1 | disgust recall |",
             "|---:|---:|---:|---:|---:|"]
    for p in points:
        mark = " **≥ fallback**" if p.accuracy >= fallback_accuracy else ""
        disgust = "—" if p.disgust_recall is None else f"{p.disgust_recall:.3f}"
        lines.append(f"| {p.defer_below:.3f} | {p.deferred_fraction:.1%} | {p.accuracy:.4f}{mark} | "
                     f"{p.macro_f1:.4f} | {disgust} |")
    lines += ["", "Cross-fitted (threshold picked on one random half, the lowest matching the fallback there; "
              "measured on the other half):", "",
              "| fold | defer below | faces deferred | accuracy | fallback alone |", "|---:|---:|---:|---:|---:|"]
    for i, f in enumerate(folds, 1):
        lines.append(f"| {i} | {f['defer_below']:.3f} | {f['deferred_fraction']:.1%} | {f['accuracy']:.4f} | "
                     f"{f['fallback_accuracy']:.4f} |")
    return "\n".join([*lines, ""])


def as_json(points: list[CurvePoint]) -> list[dict]:
    return [asdict(p) for p in points]
