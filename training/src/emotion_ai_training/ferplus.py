"""FER+ (Barsoum et al. 2016): the votes of ten annotators for every FER-2013 image, as FER-2013's 7 classes.

The vote file is Microsoft's `fer2013new.csv` (`Usage, Image name, neutral, happiness, surprise, sadness, anger,
disgust, fear, contempt, unknown, NF`), row *i* re-labelling row *i* of `fer2013.csv`. The output contract
stays FER-2013's 7 classes: `contempt` votes are dropped (the rest renormalised), and an image is *unusable*
when it has no vote left for the 7 classes or when `unknown` or `NF` (not a face) gets at least as many votes
as its most-voted expression. Its *majority* is the most-voted of the 7 classes; a tie makes every tied class
a majority class (`agrees`), and splits the one-hot target between them (`targets`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from emotion_ai.spec import EMOTION_LABELS

from .data import FER_USAGE_TO_SPLIT, EmotionData
from .dataset_files import BadRow, DatasetError, check_file, read_csv, report_bad_rows

log = logging.getLogger(__name__)

#: The vote columns of the FER+ file, in its order.
FERPLUS_COLUMNS: tuple[str, ...] = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear",
                                    "contempt", "unknown", "NF")
#: FER+ class → FER-2013 label (contempt, unknown and NF have none).
FERPLUS_TO_FER: dict[str, str] = {"neutral": "neutral", "happiness": "happy", "surprise": "surprise",
                                  "sadness": "sad", "anger": "angry", "disgust": "disgust", "fear": "fear"}
#: Training target schemes: FER-2013's label, the FER+ majority (one-hot), or the FER+ vote distribution.
LABEL_SOURCES: tuple[str, ...] = ("fer2013", "ferplus-majority", "ferplus-votes")
_COLUMN = {name: i for i, name in enumerate(FERPLUS_COLUMNS)}
_TO_FER_INDEX = np.array([_COLUMN[fp] for fer in EMOTION_LABELS for fp, f in FERPLUS_TO_FER.items() if f == fer])


@dataclass
class FerPlusVotes:
    """Votes [N, 10] (int, `FERPLUS_COLUMNS` order) and split [N] ('train'|'validation'|'test') of a vote file."""

    votes: np.ndarray
    split: np.ndarray
    source: str
    bad_rows: list[BadRow] = field(default_factory=list)


def load_ferplus(path: str | Path, *, strict: bool = False) -> FerPlusVotes:
    """Read a FER+ vote file (`fer2013new.csv` or its .gz).

    Args:
        path: the vote file.
        strict: fail on a bad row instead of giving it no votes (which makes it unusable) and counting it.

    Returns:
        Every row's votes, in file order (row i re-labels row i of fer2013.csv).

    Raises:
        DatasetError: the file is missing, empty, not a FER+ vote file, or (strict) has a bad row.
    """
    path = Path(path)
    check_file(path)
    header, rows, fh = read_csv(path)
    missing = [c for c in ("Usage", *FERPLUS_COLUMNS) if c not in header]
    if missing:
        fh.close()
        raise DatasetError(f"{path}: not a FER+ vote file: missing column(s) {missing}; header is {header}")
    columns = [header.index(c) for c in FERPLUS_COLUMNS]
    i_usage = header.index("Usage")
    votes, splits, bad = [], [], []
    with fh:
        for line, row in rows:
            usage = row[i_usage].strip() if len(row) == len(header) else ""
            counts = [row[i].strip() for i in columns] if len(row) == len(header) else []
            if usage not in FER_USAGE_TO_SPLIT or not all(c.isdigit() for c in counts):
                bad.append(BadRow(line, f"expected a Usage and {len(FERPLUS_COLUMNS)} vote counts"))
                votes.append([0] * len(FERPLUS_COLUMNS))
                splits.append("")
                continue
            votes.append([int(c) for c in counts])
            splits.append(FER_USAGE_TO_SPLIT[usage])
    report_bad_rows(bad, path, strict)
    if not votes:
        raise DatasetError(f"{path}: no rows")
    log.info("%s: %d rows of FER+ votes (%d bad rows without votes)", path, len(votes), len(bad))
    return FerPlusVotes(np.asarray(votes, np.int64).reshape(-1, len(FERPLUS_COLUMNS)), np.asarray(splits),
                        str(path), bad)


def aligned_votes(data: EmotionData, ferplus: FerPlusVotes) -> np.ndarray:
    """The FER+ votes [N, 10] of `data`'s images (row by row, bad FER-2013 rows skipped as `data` skipped them).

    Raises:
        DatasetError: the files do not align: another row count, or a row whose split differs.
    """
    if len(data.rows) != len(data.images) or (len(data.rows) and data.rows.max() >= len(ferplus.votes)):
        raise DatasetError(f"{ferplus.source} has {len(ferplus.votes)} rows; {data.source} has more: "
                           "they do not re-label the same images")
    votes = ferplus.votes[data.rows]
    known = ferplus.split[data.rows] != ""
    mismatch = np.flatnonzero(known & (ferplus.split[data.rows] != data.split))
    if len(mismatch):
        raise DatasetError(f"{ferplus.source} does not align with {data.source}: data row {data.rows[mismatch[0]]} "
                           f"is {data.split[mismatch[0]]!r} in one and {ferplus.split[data.rows[mismatch[0]]]!r} "
                           f"in the other ({len(mismatch)} such rows)")
    return votes


def emotion_votes(votes: np.ndarray) -> np.ndarray:
    """Votes [N, 10] → votes for FER-2013's 7 classes [N, 7] in `EMOTION_LABELS` order (contempt dropped)."""
    return np.asarray(votes)[:, _TO_FER_INDEX]


def usable(votes: np.ndarray) -> np.ndarray:
    """[N] bool: the image has a vote for one of the 7 classes, and unknown / NF are not as voted as its top."""
    seven = emotion_votes(votes).max(axis=1)
    other = np.asarray(votes)[:, [_COLUMN["unknown"], _COLUMN["NF"]]].max(axis=1)
    return (seven > 0) & (other < seven)


def agrees(predicted: np.ndarray, votes: np.ndarray) -> np.ndarray:
    """[N] bool: the predicted class index (FER-2013 order) is a majority class of the image's votes [N, 10]."""
    seven = emotion_votes(votes)
    return seven[np.arange(len(seven)), np.asarray(predicted)] == seven.max(axis=1)


def targets(votes: np.ndarray, scheme: str, fer2013_labels: np.ndarray | None = None,
            fer2013_weight: float = 0.0) -> np.ndarray:
    """Training targets [N, 7] float32 from votes [N, 10] (usable rows: see `usable`).

    Args:
        votes: FER+ votes.
        scheme: "ferplus-majority" (one-hot on the majority class, split evenly on ties) or "ferplus-votes"
            (the vote distribution over the 7 classes).
        fer2013_labels: the images' FER-2013 label indices [N], mixed in with `fer2013_weight`.
        fer2013_weight: W in W·one-hot(FER-2013 label) + (1 − W)·FER+ target.

    Raises:
        ValueError: another scheme, or a weight without labels.
    """
    if fer2013_weight and fer2013_labels is None:
        raise ValueError("fer2013_weight needs the FER-2013 labels")
    seven = emotion_votes(votes).astype(np.float32)
    if scheme == "ferplus-majority":
        seven = (seven == seven.max(axis=1, keepdims=True)).astype(np.float32)
    elif scheme != "ferplus-votes":
        raise ValueError(f"unknown FER+ target scheme {scheme!r}; expected ferplus-majority or ferplus-votes")
    seven /= np.maximum(seven.sum(axis=1, keepdims=True), 1.0)
    if fer2013_weight:
        seven = fer2013_weight * np.eye(seven.shape[1], dtype=np.float32)[fer2013_labels] + (1 - fer2013_weight) * seven
    return seven
