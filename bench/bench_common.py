"""Helpers shared by the benchmark commands: which model version to use and where results go."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path


def latest_version(model_root: Path) -> Path | None:
    """The highest numeric version folder under `model_root`, or None when there is none."""
    if not model_root.is_dir():
        return None
    versions = sorted((int(p.name), p) for p in model_root.iterdir() if p.name.isdigit() and p.is_dir())
    return versions[-1][1] if versions else None


def write_results(out: Path, stem: str, doc: dict, markdown: Callable[[dict], str]) -> None:
    """Write `<stem>.json` and `<stem>.md` into `out` and echo the markdown table."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(doc, indent=2) + "\n")
    text = markdown(doc)
    (out / f"{stem}.md").write_text(text)
    sys.stdout.write(text)
