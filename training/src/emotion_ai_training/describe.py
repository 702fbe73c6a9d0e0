"""`emotion-ai-train describe DATA`: look at a dataset before training on it.

Writes `summary.txt` + `summary.json`, a class/split bar chart, and a sample grid (per class for
emotion, with the 15 points drawn for keypoints). Counts exact duplicates, duplicates that cross
splits, blank images, and missing keypoints per point. With FER+ votes (`votes`): the images left out of FER+
training and evaluation, and per split and class how often FER-2013's label is a FER+ majority class.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import cv2
import numpy as np
from emotion_ai.spec import EMOTION_LABELS, KEYPOINT_NAMES

from emotion_ai_training.augment import draw_points, image_grid
from emotion_ai_training.data import DatasetError, EmotionData, load_emotion, load_keypoints
from emotion_ai_training.ferplus import agrees, aligned_votes, emotion_votes, load_ferplus, usable

log = logging.getLogger(__name__)

BLANK_STD = 2.0  # a grayscale image with pixel std below this is "blank"


def duplicate_stats(images: np.ndarray, split: np.ndarray) -> dict:
    """Exact-duplicate groups, images in them beyond the first, and groups spanning more than one split."""
    digests = np.array([hashlib.blake2b(im.tobytes(), digest_size=12).hexdigest() for im in images])
    _, inverse, counts = np.unique(digests, return_inverse=True, return_counts=True)
    dup_groups = np.flatnonzero(counts > 1)
    cross = sum(1 for g in dup_groups if len(set(split[inverse == g])) > 1)
    return {"duplicate_groups": len(dup_groups), "duplicate_images": int((counts[dup_groups] - 1).sum()),
            "groups_crossing_splits": int(cross)}


def _bar_chart(counts: dict[str, dict[str, int]], path: Path, title: str) -> None:
    import matplotlib  # noqa: PLC0415 -- matplotlib only draws the figures, on the Agg backend chosen before pyplot loads

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 -- matplotlib only draws the figures, on the Agg backend chosen before pyplot loads

    splits = list(counts)
    names = list(dict.fromkeys(n for c in counts.values() for n in c))
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(names) + 2), 3.5))
    width = 0.8 / max(len(splits), 1)
    for i, s in enumerate(splits):
        ax.bar(np.arange(len(names)) + i * width, [counts[s].get(n, 0) for n in names], width, label=s)
    ax.set_xticks(np.arange(len(names)) + width * (len(splits) - 1) / 2, names, rotation=30, ha="right")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def describe(data: str, out_dir: str | Path, task: str | None = None, cache_dir: str | None = None,
             strict: bool = False, votes: str | None = None) -> dict:
    """Summarise an emotion or keypoints dataset into out_dir; the task is guessed from the file when omitted.
    `votes`, a FER+ vote file of an emotion dataset's images, adds the vote statistics (`ferplus_summary`)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if task is None:
        try:
            return _describe_emotion(load_emotion(data, strict=strict, cache_dir=cache_dir), out, votes)
        except DatasetError as exc:
            if "not a FER-2013 CSV" not in str(exc):
                raise
            task = "keypoints"
    if task == "emotion":
        return _describe_emotion(load_emotion(data, strict=strict, cache_dir=cache_dir), out, votes)
    return _describe_keypoints(load_keypoints(data, strict=strict, cache_dir=cache_dir), out)


def _finish(summary: dict, out: Path) -> dict:
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = [f"{k}: {v}" for k, v in summary.items() if not isinstance(v, dict)]
    for k, v in summary.items():
        if isinstance(v, dict):
            lines.append(f"{k}:")
            lines += [f"  {kk}: {vv}" for kk, vv in v.items()]
    (out / "summary.txt").write_text("\n".join(lines) + "\n")
    log.info("wrote %s", out / "summary.txt")
    return summary


def ferplus_summary(d: EmotionData, votes: np.ndarray) -> dict:
    """Vote statistics of FER+ `votes` [N, 10] aligned with `d`: images left out (and why), the mean share of
    the majority's votes, and per split and FER-2013 class how often FER-2013's label is a majority class."""
    keep = usable(votes)
    seven = emotion_votes(votes)
    voted = seven.max(axis=1) > 0
    summary: dict = {"ferplus_usable": int(keep.sum()),
                     "ferplus_left_out": {"unknown_or_not_a_face": int((~keep & voted).sum()),
                                          "no_vote_for_the_7_classes": int((~voted).sum())},
                     "ferplus_majority_vote_share": round(float((seven.max(1)[keep] / votes[keep].sum(1)).mean()), 3)}
    agree = np.zeros(len(votes), bool)
    agree[keep] = agrees(d.labels[keep], votes[keep]) if tuple(d.label_names) == EMOTION_LABELS else False
    for split in dict.fromkeys(d.split):
        in_split = keep & (d.split == split)
        summary[f"fer2013_label_is_ferplus_majority_{split}"] = {
            "all": round(float(agree[in_split].mean()), 3) if in_split.any() else None,
            **{name: round(float(agree[in_split & (d.labels == i)].mean()), 3)
               for i, name in enumerate(d.label_names) if (in_split & (d.labels == i)).any()}}
    return summary


def _describe_emotion(d: EmotionData, out: Path, votes: str | None = None) -> dict:
    counts = {s: {n: int(((d.split == s) & (d.labels == i)).sum()) for i, n in enumerate(d.label_names)}
              for s in dict.fromkeys(d.split)}
    _bar_chart(counts, out / "class_distribution.png", "images per class and split")
    rng = np.random.default_rng(0)
    tiles = []
    for i in range(len(d.label_names)):
        idx = np.flatnonzero(d.labels == i)
        for j in rng.choice(idx, min(8, len(idx)), replace=False) if len(idx) else []:
            tiles.append(draw_points(d.images[j]))
        tiles += [np.zeros((144, 144, 3), np.uint8)] * (8 - min(8, len(idx)))
    cv2.imwrite(str(out / "samples_per_class.png"), image_grid(tiles, 8))
    blank = int((d.images.reshape(len(d.images), -1).std(1) < BLANK_STD).sum())
    return _finish({"dataset": d.source, "task": "emotion", "images": len(d.images),
                    "labels": ", ".join(d.label_names), "bad_rows_skipped": len(d.bad_rows),
                    "blank_images": blank, **duplicate_stats(d.images, d.split),
                    "per_split": {s: sum(c.values()) for s, c in counts.items()},
                    **{f"classes_{s}": c for s, c in counts.items()},
                    **(ferplus_summary(d, aligned_votes(d, load_ferplus(votes))) if votes else {})}, out)


def _describe_keypoints(d, out: Path) -> dict:
    missing = np.isnan(d.points).any(axis=2)
    per_point = {n: int(missing[:, k].sum()) for k, n in enumerate(KEYPOINT_NAMES)}
    counts = {s: {"faces": int((d.split == s).sum()), "all 15 points": int(((d.split == s) & ~missing.any(1)).sum())}
              for s in dict.fromkeys(d.split)}
    if "source" in d.metadata:
        for s, per_split in counts.items():
            for src in np.unique(d.metadata["source"]):
                per_split[src] = int(((d.split == s) & (d.metadata["source"] == src)).sum())
    _bar_chart(counts, out / "split_distribution.png", "faces per split")
    idx = np.random.default_rng(0).choice(len(d.images), min(16, len(d.images)), replace=False)
    cv2.imwrite(str(out / "samples_with_keypoints.png"),
                image_grid([draw_points(d.images[i], d.points[i]) for i in idx], 4))
    blank = int((d.images.reshape(len(d.images), -1).std(1) < BLANK_STD).sum())
    subjects = d.metadata.get("subject")
    return _finish({"dataset": d.source, "task": "keypoints", "faces": len(d.images),
                    "subjects": len(np.unique(subjects)) if subjects is not None else "n/a",
                    "faces_with_all_points": int((~missing.any(1)).sum()), "bad_rows_skipped": len(d.bad_rows),
                    "blank_images": blank, **duplicate_stats(d.images, d.split),
                    "per_split": counts, "missing_per_point": per_point}, out)
