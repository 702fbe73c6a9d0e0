"""Reading the raw dataset files: plain or gzipped CSV text, space-separated pixel strings parsed in C, the
bad rows found on the way (skipped and logged, or an error with strict=True), and a file's fingerprint."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

#: Where the datasets live: `EMOTION_AI_DATA`, else ../shared/data (the repository's sibling folder).
DATA_ENV = "EMOTION_AI_DATA"
#: The dataset file of each task inside the data folder, and the FER+ votes of the emotion images.
DATA_FILES = {"emotion": "fer2013.csv.gz", "keypoints": "facial_keypoints.csv.gz"}
VOTES_FILE = "ferplus_votes.csv.gz"


def data_dir() -> Path:
    """The data folder: `$EMOTION_AI_DATA`, else ../shared/data (relative to the working directory)."""
    return Path(os.environ.get(DATA_ENV) or Path("..") / "shared" / "data")


def default_data(task: str) -> Path:
    """The default dataset file of `task` ("emotion" or "keypoints") in `data_dir()`."""
    return data_dir() / DATA_FILES[task]


def default_votes() -> Path:
    """The default FER+ vote file in `data_dir()`."""
    return data_dir() / VOTES_FILE

csv.field_size_limit(1 << 24)


class DatasetError(ValueError):
    """A dataset file is missing, empty, of an unknown layout, or (with strict=True) has bad rows."""


@dataclass(frozen=True)
class BadRow:
    line: int
    reason: str


def check_file(path: Path) -> None:
    if not path.exists():
        raise DatasetError(f"{path}: no such file or directory")
    if path.is_file() and path.stat().st_size == 0:
        raise DatasetError(f"{path}: file is empty")


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def read_csv(path: Path) -> tuple[list[str], Iterator[tuple[int, list[str]]], io.TextIOBase]:
    """Header (stripped names) and an iterator of (line number, row)."""
    fh = _open_text(path)
    reader = csv.reader(fh)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        fh.close()
        raise DatasetError(f"{path}: file is empty") from None
    except (UnicodeDecodeError, OSError, EOFError, csv.Error) as exc:
        fh.close()
        raise DatasetError(f"{path}: not a readable CSV file ({exc})") from None

    def rows() -> Iterator[tuple[int, list[str]]]:
        try:
            for row in reader:
                if row:
                    yield reader.line_num, row
        except (UnicodeDecodeError, OSError, EOFError, csv.Error) as exc:
            raise DatasetError(f"{path}: file is corrupt near line {reader.line_num + 1} ({exc})") from None

    return header, rows(), fh


def parse_pixel_rows(pixel_strings: list[str], n_pixels: int) -> tuple[np.ndarray, np.ndarray]:
    """Parse space-separated pixel strings into a uint8 [N, n_pixels] array, parsing in C (no per-pixel Python).

    Returns (pixels of the good rows, boolean mask of good rows). A row is bad unless it holds exactly
    n_pixels integers in 0..255. Fast path: one parse of all rows joined; rows are only parsed one by one
    when that finds a problem, to say which rows are bad.
    """
    strings = [s.strip() for s in pixel_strings]
    if all(s.count(" ") == n_pixels - 1 for s in strings):
        flat = _parse_ints(" ".join(strings))
        if flat is not None and flat.size == len(strings) * n_pixels and _in_range(flat):
            return flat.astype(np.uint8).reshape(-1, n_pixels), np.ones(len(strings), bool)
    ok = np.zeros(len(strings), bool)
    good_rows = []
    for i, s in enumerate(strings):
        row = _parse_ints(s)
        if row is not None and row.size == n_pixels and _in_range(row):
            ok[i] = True
            good_rows.append(row.astype(np.uint8))
    pixels = np.stack(good_rows) if good_rows else np.zeros((0, n_pixels), np.uint8)
    return pixels, ok


def _parse_ints(text: str) -> np.ndarray | None:
    """Whitespace-separated integers, or None if anything in `text` is not one."""
    if not text:
        return np.zeros(0, np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            return np.fromstring(text, dtype=np.int64, sep=" ")
        except (ValueError, DeprecationWarning):
            return None


def _in_range(values: np.ndarray) -> bool:
    return bool(values.size == 0 or (values.min() >= 0 and values.max() <= 255))


def file_sha256(path: Path) -> str:
    """SHA-256 of a file (or of the sorted file list of a folder)."""
    h = hashlib.sha256()
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            if p.is_file():
                h.update(str(p.relative_to(path)).encode())
                h.update(str(p.stat().st_size).encode())
        return h.hexdigest()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def report_bad_rows(bad: list[BadRow], path: Path, strict: bool) -> None:
    if not bad:
        return
    shown = "; ".join(f"line {b.line}: {b.reason}" for b in bad[:10])
    more = f" (and {len(bad) - 10} more)" if len(bad) > 10 else ""
    if strict:
        raise DatasetError(f"{path}: {len(bad)} bad row(s): {shown}{more}")
    log.warning("%s: skipped %d bad row(s): %s%s", path, len(bad), shown, more)
