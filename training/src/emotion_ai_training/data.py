"""Loaders for the dataset files users actually download, parsed once into uint8 arrays and cached.

FER-2013: `fer2013.csv[.gz]` (emotion,pixels,Usage), `icml_face_data.csv` (emotion, Usage, pixels — with
spaces), or an image-folder tree (`train/<class>/*.jpg`, `test/…`, `validation/…`).
Facial keypoints: Kaggle `training.csv[.gz]` (30 coordinate columns + Image), extra columns kept as metadata.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from emotion_ai.spec import EMOTION_INPUT_SIZE, EMOTION_LABELS, KEYPOINT_COLUMNS, KEYPOINT_NAMES, KEYPOINTS_INPUT_SIZE

from .dataset_cache import cache_path, load_cache, save_cache
from .dataset_files import BadRow, DatasetError, check_file, parse_pixel_rows, read_csv, report_bad_rows

log = logging.getLogger(__name__)

FER_USAGE_TO_SPLIT = {"Training": "train", "PublicTest": "validation", "PrivateTest": "test"}
FOLDER_SPLITS = {"train": "train", "training": "train", "validation": "validation", "val": "validation",
                 "test": "test"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".tif", ".tiff", ".webp"}


@dataclass
class EmotionData:
    """Images [N, 48, 48] uint8, labels [N] int64 indexing `label_names`, split [N] ('train'|'validation'|'test'),
    and rows [N]: each image's 0-based data row in its CSV (bad rows skipped), the key other label files of the
    same images (FER+ votes) align on; a folder's images are numbered in load order."""

    images: np.ndarray
    labels: np.ndarray
    split: np.ndarray
    label_names: tuple[str, ...]
    source: str
    bad_rows: list[BadRow] = field(default_factory=list)
    rows: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))

    def subset(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        mask = self.split == split
        return self.images[mask], self.labels[mask]


@dataclass
class KeypointsData:
    """Images [N, 96, 96] uint8, points [N, 15, 2] float32 (NaN = missing), metadata columns, split [N]."""

    images: np.ndarray
    points: np.ndarray
    metadata: dict[str, np.ndarray]
    split: np.ndarray
    source: str
    bad_rows: list[BadRow] = field(default_factory=list)

    def subset(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        mask = self.split == split
        return self.images[mask], self.points[mask]


# ---------------------------------------------------------------------------------------------- FER-2013


def load_emotion(path: str | Path, *, strict: bool = False, cache_dir: str | Path | None = None) -> EmotionData:
    """Load FER-2013 from a CSV (plain or .gz, Kaggle or ICML layout) or an image-folder tree."""
    path = Path(path)
    check_file(path)
    if path.is_dir():
        return _load_emotion_folder(path, strict)
    cache = cache_path(Path(cache_dir) if cache_dir else None, path, "emotion")
    if cache is not None and cache.exists():
        z, bad = load_cache(cache, path, strict)
        return EmotionData(z["images"], z["labels"], z["split"], tuple(z["label_names"]), str(path), bad,
                           z["rows"])
    data = _load_emotion_csv(path, strict)
    if cache is not None:
        save_cache(cache, data.bad_rows, images=data.images, labels=data.labels, split=data.split,
                   label_names=np.array(data.label_names), rows=data.rows)
    return data


def _load_emotion_csv(path: Path, strict: bool) -> EmotionData:
    header, rows, fh = read_csv(path)
    missing = {"emotion", "pixels"} - set(header)
    if missing:
        fh.close()
        raise DatasetError(f"{path}: not a FER-2013 CSV: missing column(s) {sorted(missing)}; header is {header}")
    i_label, i_pix = header.index("emotion"), header.index("pixels")
    i_usage = header.index("Usage") if "Usage" in header else None
    lines, indices, labels, usages, pixels, bad = [], [], [], [], [], []
    with fh:
        for index, (line, row) in enumerate(rows):
            if len(row) != len(header):
                bad.append(BadRow(line, f"expected {len(header)} fields, got {len(row)}"))
                continue
            label = row[i_label].strip()
            if not label.isdigit() or int(label) >= len(EMOTION_LABELS):
                bad.append(BadRow(line, f"label {label!r} is not an integer in 0..{len(EMOTION_LABELS) - 1}"))
                continue
            usage = row[i_usage].strip() if i_usage is not None else "Training"
            if usage not in FER_USAGE_TO_SPLIT:
                bad.append(BadRow(line, f"unknown Usage {usage!r}"))
                continue
            lines.append(line)
            indices.append(index)
            labels.append(int(label))
            usages.append(FER_USAGE_TO_SPLIT[usage])
            pixels.append(row[i_pix])
    n_pixels = EMOTION_INPUT_SIZE * EMOTION_INPUT_SIZE
    arr, ok = parse_pixel_rows(pixels, n_pixels)
    bad += [BadRow(lines[i], f"pixels: expected {n_pixels} integers in 0..255")
            for i in np.flatnonzero(~ok)]
    bad.sort(key=lambda b: b.line)
    report_bad_rows(bad, path, strict)
    if arr.shape[0] == 0:
        raise DatasetError(f"{path}: no valid rows")
    log.info("%s: %d images (%d bad rows skipped)", path, arr.shape[0], len(bad))
    return EmotionData(
        images=arr.reshape(-1, EMOTION_INPUT_SIZE, EMOTION_INPUT_SIZE),
        labels=np.asarray(labels, np.int64)[ok],
        split=np.asarray(usages)[ok],
        label_names=EMOTION_LABELS,
        source=str(path),
        bad_rows=bad,
        rows=np.asarray(indices, np.int64)[ok],
    )


def _load_emotion_folder(root: Path, strict: bool) -> EmotionData:
    split_dirs = {FOLDER_SPLITS[p.name.lower()]: p for p in sorted(root.iterdir())
                  if p.is_dir() and p.name.lower() in FOLDER_SPLITS}
    if not split_dirs:
        raise DatasetError(f"{root}: expected train/, test/ or validation/ sub-folders")
    known = {n: i for i, n in enumerate(EMOTION_LABELS)}
    aliases = {"anger": "angry", "happiness": "happy", "sadness": "sad", "surprised": "surprise"}
    present: set[str] = set()
    files: list[tuple[str, str, Path]] = []
    bad: list[BadRow] = []
    for split, d in split_dirs.items():
        for cls_dir in sorted(p for p in d.iterdir() if p.is_dir()):
            name = aliases.get(cls_dir.name.lower(), cls_dir.name.lower())
            if name not in known:
                raise DatasetError(f"{cls_dir}: unknown class folder {cls_dir.name!r}; expected one of "
                                   f"{', '.join(EMOTION_LABELS)}")
            present.add(name)
            files += [(split, name, f) for f in sorted(cls_dir.iterdir())
                      if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
    label_names = tuple(n for n in EMOTION_LABELS if n in present)
    index = {n: i for i, n in enumerate(label_names)}
    images, labels, splits = [], [], []
    for k, (split, name, f) in enumerate(files):
        img = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
        if img is None:
            bad.append(BadRow(k + 1, f"{f}: not a readable image"))
            continue
        if img.shape != (EMOTION_INPUT_SIZE, EMOTION_INPUT_SIZE):
            img = cv2.resize(img, (EMOTION_INPUT_SIZE, EMOTION_INPUT_SIZE), interpolation=cv2.INTER_AREA)
        images.append(img)
        labels.append(index[name])
        splits.append(split)
    report_bad_rows(bad, root, strict)
    if not images:
        raise DatasetError(f"{root}: no readable images")
    return EmotionData(np.stack(images), np.asarray(labels, np.int64), np.asarray(splits), label_names,
                       str(root), bad, np.arange(len(images), dtype=np.int64))


# ---------------------------------------------------------------------------------------------- keypoints


def load_keypoints(path: str | Path, *, strict: bool = False, cache_dir: str | Path | None = None,
                   val_fraction: float = 0.15, seed: int = 0) -> KeypointsData:
    """Load a Kaggle Facial Keypoints CSV; split by `subject` when present, else a seeded random split."""
    path = Path(path)
    check_file(path)
    if path.is_dir():
        raise DatasetError(f"{path}: expected a keypoints CSV file, got a directory")
    cache = cache_path(Path(cache_dir) if cache_dir else None, path, "keypoints")
    if cache is not None and cache.exists():
        z, bad = load_cache(cache, path, strict)
        meta = {k[5:]: v for k, v in z.items() if k.startswith("meta_")}
        data = KeypointsData(z["images"], z["points"], meta, np.empty(0), str(path), bad)
    else:
        data = _load_keypoints_csv(path, strict)
        if cache is not None:
            save_cache(cache, data.bad_rows, images=data.images, points=data.points,
                       **{f"meta_{k}": v for k, v in data.metadata.items()})
    data.split = split_keypoints(data.metadata.get("subject"), len(data.images), val_fraction, seed)
    return data


def _load_keypoints_csv(path: Path, strict: bool) -> KeypointsData:
    header, rows, fh = read_csv(path)
    missing = [c for c in (*KEYPOINT_COLUMNS, "Image") if c not in header]
    if missing:
        fh.close()
        raise DatasetError(f"{path}: not a facial-keypoints CSV: missing column(s) {missing[:5]}"
                           f"{'…' if len(missing) > 5 else ''}")
    coord_idx = [header.index(c) for c in KEYPOINT_COLUMNS]
    i_img = header.index("Image")
    meta_cols = [c for c in header if c not in KEYPOINT_COLUMNS and c != "Image"]
    meta_idx = [header.index(c) for c in meta_cols]
    lines, coords, pixels, meta, bad = [], [], [], [], []
    with fh:
        for line, row in rows:
            if len(row) != len(header):
                bad.append(BadRow(line, f"expected {len(header)} fields, got {len(row)}"))
                continue
            try:
                xy = [float(row[i]) if row[i].strip() else np.nan for i in coord_idx]
            except ValueError:
                bad.append(BadRow(line, "a keypoint coordinate is not a number"))
                continue
            lines.append(line)
            coords.append(xy)
            pixels.append(row[i_img])
            meta.append([row[i] for i in meta_idx])
    n_pixels = KEYPOINTS_INPUT_SIZE * KEYPOINTS_INPUT_SIZE
    arr, ok = parse_pixel_rows(pixels, n_pixels)
    bad += [BadRow(lines[i], f"Image: expected {n_pixels} integers in 0..255") for i in np.flatnonzero(~ok)]
    bad.sort(key=lambda b: b.line)
    report_bad_rows(bad, path, strict)
    if arr.shape[0] == 0:
        raise DatasetError(f"{path}: no valid rows")
    points = np.asarray(coords, np.float32)[ok].reshape(-1, len(KEYPOINT_NAMES), 2)
    meta_arr = np.asarray(meta, dtype=str).reshape(len(meta), len(meta_cols))[ok]
    metadata = {c: meta_arr[:, j] for j, c in enumerate(meta_cols)}
    log.info("%s: %d faces, %d with all 15 points (%d bad rows skipped)", path, arr.shape[0],
             int((~np.isnan(points).any(axis=(1, 2))).sum()), len(bad))
    return KeypointsData(arr.reshape(-1, KEYPOINTS_INPUT_SIZE, KEYPOINTS_INPUT_SIZE), points, metadata,
                         np.empty(0), str(path), bad)


def split_keypoints(subjects: np.ndarray | None, n: int, val_fraction: float, seed: int) -> np.ndarray:
    """'train'/'validation' per row: whole subjects go to one side when subjects are known."""
    rng = np.random.default_rng(seed)
    split = np.full(n, "train", dtype="<U10")
    if subjects is not None and len(set(subjects)) > 1:
        unique = np.unique(subjects)
        rng.shuffle(unique)
        target, taken, chosen = val_fraction * n, 0, set()
        counts = dict(zip(*np.unique(subjects, return_counts=True), strict=True))
        for s in unique:
            if taken >= target:
                break
            chosen.add(s)
            taken += counts[s]
        split[np.isin(subjects, list(chosen))] = "validation"
    else:
        idx = rng.permutation(n)[: round(val_fraction * n)]
        split[idx] = "validation"
    return split


# ---------------------------------------------------------------------------------------------- either task


def load_task(task: str, path: str | Path, *, strict: bool = False, cache_dir: str | Path | None = None,
              seed: int = 0) -> EmotionData | KeypointsData:
    """load_emotion or load_keypoints (whose validation split depends on `seed`) by task name."""
    if task == "emotion":
        return load_emotion(path, strict=strict, cache_dir=cache_dir)
    return load_keypoints(path, strict=strict, cache_dir=cache_dir, seed=seed)


def label_remap(source: tuple[str, ...] | list[str], target: tuple[str, ...] | list[str]) -> np.ndarray:
    """Index array mapping label ids in `source` order to ids in `target` order (-1 = not in target)."""
    return np.array([list(target).index(n) if n in target else -1 for n in source], np.int64)
