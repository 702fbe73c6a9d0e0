"""Model version folders: `<export root>/<model>/<N>/`, the layout TF Serving and `emotion-ai-serve` load.

The one rule for which folder names are versions (TF Serving's own), shared by the embedded server's version
watcher, training's export, the benchmarks and the tests. Only the standard library: no TensorFlow needed.
"""

from __future__ import annotations

from pathlib import Path

#: The file that makes a version folder a SavedModel.
SAVED_MODEL_FILE = "saved_model.pb"


def parse_version(name: str) -> int | None:
    """The version number a folder name stands for, or None when it is not a version.

    TF Serving's FileSystemStoragePathSource reads the name with absl::SimpleAtoi: '1' and '007' are
    versions (7), 'tmp', '1.5', '.1' and non-ASCII digits are not; the number must fit int64.
    """
    text = name.strip()
    digits = text[1:] if text[:1] in "+-" else text
    if not digits.isdigit() or not digits.isascii():
        return None
    value = int(text)
    return value if -(2**63) <= value < 2**63 else None


def version_dirs(base_path: Path) -> list[tuple[int, Path]]:
    """(version, folder) of each version folder directly under a model's `base_path`, in folder-name order
    (so of '007' and '7', both version 7, '7' comes last). Raises OSError, as `Path.iterdir`, when
    `base_path` cannot be listed."""
    found = []
    for child in sorted(base_path.iterdir()):
        version = parse_version(child.name)
        if version is not None and child.is_dir():
            found.append((version, child))
    return found


def has_saved_model(version_dir: Path) -> bool:
    """Whether `version_dir` holds a SavedModel (its saved_model.pb)."""
    return (version_dir / SAVED_MODEL_FILE).is_file()


def latest_version(base_path: Path, *, saved_model: bool = False) -> Path | None:
    """The folder of the highest version under `base_path` (the one TF Serving's default policy serves), or
    None when `base_path` is not a folder or has no version; `saved_model=True` counts only the version
    folders that hold a SavedModel."""
    if not base_path.is_dir():
        return None
    found = [(v, p) for v, p in version_dirs(base_path) if not saved_model or has_saved_model(p)]
    return max(found)[1] if found else None
