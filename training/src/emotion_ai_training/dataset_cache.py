"""The parse cache: a dataset file's arrays (and its bad rows) in one .npz, keyed by the file's path, size and
mtime, so a second run skips the CSV parsing yet reports the same skipped rows."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np

from .dataset_files import BadRow, report_bad_rows

log = logging.getLogger(__name__)

CACHE_FORMAT = 3  # 2: bad rows are cached too, so a cache hit reports them (and --strict fails) as parsing does;
#                  3: emotion images keep their data row (the key FER+ votes align on)


def cache_path(cache_dir: Path | None, path: Path, kind: str) -> Path | None:
    if cache_dir is None or not path.is_file():
        return None
    stat = path.stat()
    key = hashlib.sha1(f"{CACHE_FORMAT}|{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return cache_dir / f"{kind}-{path.name}-{key.hexdigest()[:12]}.npz"


def save_cache(cache: Path, bad: list[BadRow], **arrays: np.ndarray) -> None:
    """Write parsed arrays and the skipped rows atomically to a .npz cache file."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, bad_lines=np.array([b.line for b in bad], np.int64),
             bad_reasons=np.array([b.reason for b in bad], dtype=str),
             **arrays)  # type: ignore[arg-type]  # numpy's stub reads **arrays as its allow_pickle flag
    tmp.replace(cache)


def load_cache(cache: Path, path: Path, strict: bool) -> tuple[dict[str, np.ndarray], list[BadRow]]:
    """Arrays of a cache file, after reporting its skipped rows exactly as parsing the file would."""
    with np.load(cache, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    bad = [BadRow(int(line), str(reason))
           for line, reason in zip(arrays.pop("bad_lines"), arrays.pop("bad_reasons"), strict=True)]
    report_bad_rows(bad, path, strict)
    log.info("loaded %s from cache %s", path, cache)
    return arrays, bad

