"""Evaluate an exported SavedModel through its serving signature on the validation split.

Emotion: accuracy (7-class and the 5-class subset), per-class precision/recall/F1, macro-F1, a normalised
confusion matrix and calibration (expected calibration error, reliability diagram) against FER-2013's labels;
with FER+ votes, the same against the FER+ majority of ten annotators (`ferplus`). Keypoints: RMSE overall and
per point, NME (mean point-to-point error divided by the inter-ocular distance = outer eye corners), and a
grid of predicted vs true points.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
from emotion_ai.spec import (
    CLASSES_OUTPUT_KEY,
    EMOTION_LABELS,
    EMOTION_LABELS_5,
    INPUT_KEY,
    KEYPOINT_NAMES,
    KEYPOINTS_OUTPUT_KEY,
    SCORES_OUTPUT_KEY,
    SIGNATURE_NAME,
)

from emotion_ai_training.augment import draw_points, image_grid
from emotion_ai_training.data import EmotionData, KeypointsData, label_remap, load_task
from emotion_ai_training.ferplus import agrees, aligned_votes, emotion_votes, load_ferplus, usable

log = logging.getLogger(__name__)

BATCH = 256
#: Equal-width confidence bins of the expected calibration error and the reliability diagram.
CALIBRATION_BINS = 15
#: Scores are clipped to this before their logarithm is taken (`rescale`, and the export's `--temperature`).
TEMPERATURE_FLOOR = 1e-7


def _signature(model_dir: Path):
    import tensorflow as tf  # noqa: PLC0415 -- only to load a SavedModel; the metrics need numpy alone (bench/accuracy.py)

    loaded = tf.saved_model.load(str(model_dir))
    return loaded, loaded.signatures[SIGNATURE_NAME]


def _run(fn, images: np.ndarray) -> dict[str, np.ndarray]:
    import tensorflow as tf  # noqa: PLC0415 -- only to load a SavedModel; the metrics need numpy alone (bench/accuracy.py)

    chunks: dict[str, list[np.ndarray]] = {}
    for i in range(0, len(images), BATCH):
        out = fn(**{INPUT_KEY: tf.constant(images[i:i + BATCH, ..., None])})
        for k, v in out.items():
            chunks.setdefault(k, []).append(v.numpy())
    return {k: np.concatenate(v) for k, v in chunks.items()}


def _emotion_outputs(out: dict[str, np.ndarray]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Scores and label names of an emotion signature's outputs."""
    return out[SCORES_OUTPUT_KEY], tuple(s.decode() for s in out[CLASSES_OUTPUT_KEY][0])


def emotion_scores(model_dir: Path, images: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
    """Scores [N, K] and label names of emotion version `model_dir` on uint8 images [N, H, W], in batches."""
    _, fn = _signature(model_dir)
    return _emotion_outputs(_run(fn, images))


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, labels: tuple[str, ...]) -> dict:
    """Accuracy, per-class precision/recall/F1/support, macro-F1 and the row-normalised confusion matrix."""
    k = len(labels)
    cm = np.zeros((k, k), np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    tp = np.diag(cm).astype(float)
    precision = np.divide(tp, cm.sum(0), out=np.zeros(k), where=cm.sum(0) > 0)
    recall = np.divide(tp, cm.sum(1), out=np.zeros(k), where=cm.sum(1) > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k), where=(precision + recall) > 0)
    per_class = {n: {"precision": round(float(precision[i]), 4), "recall": round(float(recall[i]), 4),
                     "f1": round(float(f1[i]), 4), "support": int(cm[i].sum())} for i, n in enumerate(labels)}
    return {
        "accuracy": round(float(tp.sum() / max(cm.sum(), 1)), 4),
        "macro_f1": round(float(f1.mean()), 4),
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
    }


def calibration(scores: np.ndarray, truth: np.ndarray, bins: int = CALIBRATION_BINS) -> dict:
    """Expected calibration error of the top score and the reliability table behind it.

    Args:
        scores: class probabilities [N, K].
        truth: the right class index [N].
        bins: equal-width confidence bins over [0, 1].

    Returns:
        {"ece": Σ_b (n_b / N)·|accuracy_b − confidence_b|, "bins": [{low, high, images, confidence, accuracy}]}
        over the bins that hold images.
    """
    confidence = scores.max(axis=1)
    correct = scores.argmax(axis=1) == truth
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        members = index == b
        if not members.any():
            continue
        conf, acc = float(confidence[members].mean()), float(correct[members].mean())
        ece += members.mean() * abs(acc - conf)
        rows.append({"low": round(float(edges[b]), 4), "high": round(float(edges[b + 1]), 4),
                     "images": int(members.sum()), "confidence": round(conf, 4), "accuracy": round(acc, 4)})
    return {"ece": round(float(ece), 4), "bins": rows}


def rescale(scores: np.ndarray, temperature: float) -> np.ndarray:
    """Class probabilities [N, K] at another temperature: softmax(log(scores) / T), what an export with
    `--temperature T` serves (T > 1 softens the scores, T < 1 sharpens them; the top class never changes)."""
    z = np.log(np.clip(scores.astype(np.float64), TEMPERATURE_FLOOR, 1.0)) / temperature
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def fit_temperature(scores: np.ndarray, truth: np.ndarray) -> float:
    """The temperature (0.2 to 5, on a log grid of 1 % steps) that minimises the negative log-likelihood of
    `truth` [N] under `rescale(scores, T)` (temperature scaling, Guo et al. 2017)."""
    rows = np.arange(len(truth))
    grid = np.exp(np.arange(np.log(0.2), np.log(5.0), 0.01))
    nll = [float(-np.log(np.maximum(rescale(scores, t)[rows, truth], 1e-12)).mean()) for t in grid]
    return round(float(grid[int(np.argmin(nll))]), 3)


def temperature_fit(scores: np.ndarray, truth: np.ndarray) -> dict:
    """The temperature fitted on all of `scores` (what a re-export would use) and, to show what it buys on
    images it was not fitted on, the ECE with 2-fold cross-fitting (fitted on the even-numbered images and
    measured on the odd ones, and the reverse, the two ECEs averaged)."""
    halves = [np.arange(len(truth)) % 2 == k for k in (0, 1)]
    crossed = [calibration(rescale(scores[test], fit_temperature(scores[~test], truth[~test])), truth[test])["ece"]
               for test in halves]
    return {"fitted": fit_temperature(scores, truth), "ece_cross_fitted": round(float(np.mean(crossed)), 4)}


def ferplus_report(scores: np.ndarray, votes: np.ndarray) -> dict:
    """Agreement of 7-class `scores` [N, 7] (FER-2013 order) with the FER+ majority of `votes` [N, 10].

    Images without a usable majority (`ferplus.usable`) are left out and counted. A prediction agrees when it
    is a majority class (any of a tie); the confusion matrix's true class is then the prediction, else the
    first majority class. Returns agreement, macro-F1, per-class table, confusion matrix and calibration.
    """
    keep = usable(votes)
    predicted = scores[keep].argmax(axis=1)
    truth = np.where(agrees(predicted, votes[keep]), predicted, emotion_votes(votes[keep]).argmax(axis=1))
    report = classification_report(truth, predicted, EMOTION_LABELS)
    return {"images": int(keep.sum()), "left_out": int((~keep).sum()), "agreement": report["accuracy"],
            "macro_f1": report["macro_f1"], "per_class": report["per_class"],
            "confusion_matrix": report["confusion_matrix"],
            "calibration": calibration(scores[keep], truth) | {"temperature": temperature_fit(scores[keep], truth)}}


def evaluate(kind: str, model_dir: Path, data: str, out_dir: Path, cache_dir: str | None = None, seed: int = 0,
             dataset: EmotionData | KeypointsData | None = None, name: str | None = None,
             votes: str | None = None) -> dict:
    """Metrics of the `kind` model in model_dir on the validation split, written to out_dir (JSON + PNG).

    `dataset` skips loading `data` again; `name` is how the model is referred to (default: model_dir);
    `votes` (emotion) is the FER+ vote file of `data`'s images, for the metrics against the FER+ majority.
    """
    dataset = dataset if dataset is not None else load_task(kind, data, cache_dir=cache_dir, seed=seed)
    name = name or str(model_dir)
    if kind == "emotion":
        if not isinstance(dataset, EmotionData):
            raise TypeError(f"an emotion model is evaluated on emotion data, not {type(dataset).__name__}")
        aligned = aligned_votes(dataset, load_ferplus(votes)) if votes else None
        return evaluate_emotion(model_dir, dataset, out_dir, name, aligned)
    if not isinstance(dataset, KeypointsData):
        raise TypeError(f"a keypoints model is evaluated on keypoints data, not {type(dataset).__name__}")
    return evaluate_keypoints(model_dir, dataset, out_dir, name, seed)


def emotion_report(scores: np.ndarray, labels: np.ndarray, label_names: tuple[str, ...],
                   model_labels: tuple[str, ...]) -> dict:
    """Accuracy, macro-F1, disgust recall, the 5-class subset's accuracy and the per-class table of
    `scores` (columns named by `model_labels`) against dataset `labels` (indices into `label_names`)."""
    # Map dataset labels onto the model's label order (they may differ, e.g. a 5-class model).
    y = label_remap(label_names, model_labels)[labels]
    keep = y >= 0
    report = classification_report(y[keep], scores[keep].argmax(1), model_labels)
    subset = [model_labels.index(n) for n in EMOTION_LABELS_5 if n in model_labels]
    in5 = np.isin(y, subset)
    pred5 = np.array(subset)[scores[in5][:, subset].argmax(1)]
    report5 = classification_report(np.searchsorted(subset, y[in5]), np.searchsorted(subset, pred5),
                                    tuple(model_labels[i] for i in subset))
    return {
        "images": int(keep.sum()), "labels": list(model_labels),
        "accuracy": report["accuracy"], "macro_f1": report["macro_f1"],
        "disgust_recall": report["per_class"].get("disgust", {}).get("recall"),
        "accuracy_5class": report5["accuracy"], "macro_f1_5class": report5["macro_f1"],
        "per_class": report["per_class"], "confusion_matrix": report["confusion_matrix"],
    }


def emotion_metrics(scores: np.ndarray, model_labels: tuple[str, ...], dataset: EmotionData,
                    votes: np.ndarray | None = None) -> dict:
    """The metrics of validation `scores` [N, K] (columns named by `model_labels`) of `dataset`: `emotion_report`,
    calibration against FER-2013's labels and, with `votes` [every image of `dataset`, 10], `ferplus`."""
    _, labels = dataset.subset("validation")
    result = emotion_report(scores, labels, dataset.label_names, model_labels)
    if model_labels == EMOTION_LABELS:
        truth = label_remap(dataset.label_names, model_labels)[labels]
        result["calibration"] = calibration(scores, truth) | {"temperature": temperature_fit(scores, truth)}
        if votes is not None:
            result["ferplus"] = ferplus_report(scores, votes[dataset.split == "validation"])
    return result


def evaluate_emotion(model_dir: Path, dataset: EmotionData, out_dir: Path, name: str,
                     votes: np.ndarray | None = None) -> dict:
    """`evaluate` for an emotion version; `votes` [N, 10] are the FER+ votes of every image of `dataset`."""
    _, fn = _signature(model_dir)
    images, _ = dataset.subset("validation")
    t0 = time.perf_counter()
    scores, model_labels = _emotion_outputs(_run(fn, images))
    seconds = time.perf_counter() - t0
    result = {"model": name, "data": dataset.source, "split": "validation (FER-2013 PublicTest)",
              **emotion_metrics(scores, model_labels, dataset, votes),
              "images_per_second": round(len(images) / seconds, 1)}
    out_dir.mkdir(parents=True, exist_ok=True)
    _plot_confusion(np.array(result["confusion_matrix"]), model_labels, out_dir / "confusion_matrix.png",
                    f"{name} — accuracy {result['accuracy']:.3f}")
    curves = {"FER-2013 labels": result["calibration"]} if "calibration" in result else {}
    if "ferplus" in result:
        curves["FER+ majority"] = result["ferplus"]["calibration"]
        _plot_confusion(np.array(result["ferplus"]["confusion_matrix"]), model_labels,
                        out_dir / "confusion_matrix_ferplus.png",
                        f"{name} — agreement with the FER+ majority {result['ferplus']['agreement']:.3f}")
    if curves:
        _plot_reliability(curves, out_dir / "reliability.png", name)
    (out_dir / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _plot_reliability(curves: dict[str, dict], path: Path, title: str) -> None:
    """Reliability diagram: accuracy against mean confidence per bin, one line per label source."""
    import matplotlib  # noqa: PLC0415 -- matplotlib only draws the figures, on the Agg backend chosen before pyplot loads

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 -- matplotlib only draws the figures, on the Agg backend chosen before pyplot loads

    fig, ax = plt.subplots(figsize=(4.8, 4.5))
    ax.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=1, label="perfectly calibrated")
    for label, curve in curves.items():
        ax.plot([b["confidence"] for b in curve["bins"]], [b["accuracy"] for b in curve["bins"]], marker="o",
                label=f"{label} (ECE {curve['ece']:.3f})")
    ax.set_xlabel("top score (confidence)")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_confusion(cm: np.ndarray, labels: tuple[str, ...], path: Path, title: str) -> None:
    import matplotlib  # noqa: PLC0415 -- matplotlib only draws the figures, on the Agg backend chosen before pyplot loads

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 -- matplotlib only draws the figures, on the Agg backend chosen before pyplot loads

    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center",
                    color="white" if norm[i, j] > 0.5 else "black", fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def keypoint_errors(pred: np.ndarray, true: np.ndarray) -> dict:
    """RMSE (overall, per point) and NME over present points; NaN in `true` = missing."""
    present = ~np.isnan(true)
    sq = np.where(present, (pred - np.nan_to_num(true)) ** 2, 0.0)
    rmse = float(np.sqrt(sq.sum() / max(present.sum(), 1)))
    per_point = np.sqrt(sq.sum(axis=(0, 2)) / np.maximum(present.sum(axis=(0, 2)), 1))
    left, right = KEYPOINT_NAMES.index("left_eye_outer_corner"), KEYPOINT_NAMES.index("right_eye_outer_corner")
    iod = np.linalg.norm(true[:, left] - true[:, right], axis=-1)
    dist = np.linalg.norm(pred - true, axis=-1)  # NaN where missing
    ok = ~np.isnan(iod) & (iod > 1)
    nme = float(np.nanmean(dist[ok] / iod[ok, None])) if ok.any() else float("nan")
    return {
        "rmse": round(rmse, 4),
        "nme_interocular": round(nme, 5),
        "per_point_rmse": {n: round(float(v), 4) for n, v in zip(KEYPOINT_NAMES, per_point, strict=True)},
    }


def evaluate_keypoints(model_dir: Path, dataset: KeypointsData, out_dir: Path, name: str, seed: int) -> dict:
    _, fn = _signature(model_dir)
    images, points = dataset.subset("validation")
    t0 = time.perf_counter()
    pred = _run(fn, images)[KEYPOINTS_OUTPUT_KEY]
    seconds = time.perf_counter() - t0
    result = {"model": name, "data": dataset.source,
              "split": "validation (by subject)" if "subject" in dataset.metadata else "validation (random)",
              "images": len(images), "seed": seed} | keypoint_errors(pred, points)
    result["images_per_second"] = round(len(images) / seconds, 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    import cv2  # noqa: PLC0415 -- only for the keypoints preview sheet

    tiles = []
    for i in np.linspace(0, len(images) - 1, 16).astype(int):
        tile = draw_points(images[i], points[i])
        for x, y in pred[i]:
            cv2.drawMarker(tile, (round((x + 0.5) * 3 - 0.5), round((y + 0.5) * 3 - 0.5)), (255, 255, 0),
                           cv2.MARKER_CROSS, 7, 1)
        tiles.append(tile)
    cv2.imwrite(str(out_dir / "predictions.png"), image_grid(tiles, 4))
    (out_dir / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
