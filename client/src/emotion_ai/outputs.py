"""Where the CLI's results go: CSV rows, files created on first write, annotated copies that never overwrite."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import IO, Any

_WRITABLE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
#: The key of an input's or frame's error in the CLI's JSON lines, and the last CSV column (empty in the rows
#: of inputs and frames that have a result).
ERROR_KEY = "error"


def annotated_path(out_dir: Path, relative: Path) -> Path:
    """Where the annotated copy of an input goes: its relative path under `out_dir`, in its own format
    where OpenCV writes it (else `<name>.jpg`), never over an existing file (`-1`, `-2`, ... added)."""
    name = relative.name if relative.suffix.lower() in _WRITABLE_SUFFIXES else relative.name + ".jpg"
    target = out_dir / relative.parent / name
    n = 0
    while target.exists():
        n += 1
        target = out_dir / relative.parent / f"{Path(name).stem}-{n}{Path(name).suffix}"
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


class CsvSink:
    """CSV rows (`Prediction.to_rows()`, or an error row: the lead column and `ERROR_KEY`); the header comes
    from the first row with face columns, so rows of images or frames without a face (or with an error) before
    it wait in memory until the model's labels are known. The last column is always `ERROR_KEY`."""

    def __init__(self, stream: IO[str]):
        self.stream = stream
        self._writer: csv.DictWriter | None = None
        self._pending: list[dict[str, Any]] = []

    def add(self, row: dict[str, Any]) -> None:
        if self._writer is None and "emotion" in row:
            self._open(list(row))
        if self._writer is None:
            self._pending.append(row)
        else:
            self._writer.writerow(row)

    def _open(self, fields: list[str]) -> None:
        fields = [f for f in fields if f != ERROR_KEY] + [ERROR_KEY]
        self._writer = csv.DictWriter(self.stream, fieldnames=fields, extrasaction="ignore")
        self._writer.writeheader()
        for row in self._pending:
            self._writer.writerow(row)
        self._pending.clear()

    def close(self) -> None:
        if self._writer is None:  # no face at all: the lead columns only
            self._open(list(dict.fromkeys(key for row in self._pending for key in row)))


class LazyFile:
    """A text file created on the first write, so a run that fails before any output leaves none."""

    def __init__(self, path: Path):
        self.path = path
        self._file: IO[str] | None = None

    def write(self, text: str) -> int:
        if self._file is None:
            self._file = open(self.path, "w", newline="", encoding="utf-8")  # noqa: SIM115
        return self._file.write(text)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
