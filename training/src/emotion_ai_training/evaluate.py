"""Evaluate an exported SavedModel through its serving signature on the validation split.

Emotion: accuracy (7-class and the 5-class subset), per-class precision/recall/F1, macro-F1 and a
normalised confusion matrix. Keypoints: RMSE overall and per point, NME (mean point-to-point error
divided by the inter-ocular distance = outer eye corners), and a grid of predicted vs true points.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
from emotion_ai.spec import (
    CLASSES_OUTPUT_KEY,
    EMOTION_LABELS_5,
    INPUT_KEY,
    KEYPOINT_NAMES,
    KEYPOINTS_OUTPUT_KEY,
    SCORES_OUTPUT_KEY,
    SIGNATURE_NAME,
)

from emotion_ai_training.data import EmotionData, KeypointsData, label_remap, load_task

log = logging.getLogger(__name__)

BATCH = 256


def _signature(model_dir: Path):
    import tensorflow as tf

    loaded = tf.saved_model.load(str(model_dir))
    return loaded, loaded.signatures[SIGNATURE_NAME]


def _run(fn, images: np.ndarray) -> dict[str, np.ndarray]:
    import tensorflow as tf

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


def evaluate(kind: str, model_dir: Path, data: str, out_dir: Path, cache_dir: str | None = None, seed: int = 0,
             dataset: EmotionData | KeypointsData | None = None, name: str | None = None) -> dict:
    """Metrics of the `kind` model in model_dir on the validation split, written to out_dir (JSON + PNG).

    `dataset` skips loading `data` again; `name` is how the model is referred to (default: model_dir).
    """
    dataset = dataset if dataset is not None else load_task(kind, data, cache_dir=cache_dir, seed=seed)
    name = name or str(model_dir)
    if kind == "emotion":
        return evaluate_emotion(model_dir, dataset, out_dir, name)
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


def evaluate_emotion(model_dir: Path, dataset: EmotionData, out_dir: Path, name: str) -> dict:
    _, fn = _signature(model_dir)
    images, labels = dataset.subset("validation")
    t0 = time.perf_counter()
    scores, model_labels = _emotion_outputs(_run(fn, images))
    seconds = time.perf_counter() - t0
    result = {"model": name, "data": dataset.source, "split": "validation (FER-2013 PublicTest)",
              **emotion_report(scores, labels, dataset.label_names, model_labels),
              "images_per_second": round(len(images) / seconds, 1)}
    out_dir.mkdir(parents=True, exist_ok=True)
    _plot_confusion(np.array(result["confusion_matrix"]), model_labels, out_dir / "confusion_matrix.png",
                    f"{name} — accuracy {result['accuracy']:.3f}")
    (out_dir / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _plot_confusion(cm: np.ndarray, labels: tuple[str, ...], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    from emotion_ai_training.augment import draw_points, image_grid

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
    import cv2

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
