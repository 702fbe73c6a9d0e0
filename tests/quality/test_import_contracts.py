"""Import direction: the repository keeps the import-linter contracts of pyproject.toml, and those contracts
break on the import cycles and reversed imports they exist to forbid (run on a copy of the client package
with one such import added)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import emotion_ai
import pytest

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "pyproject.toml"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
CYCLES = "Client modules import each other without cycles"
LAYERS = "Client layers: spec and versions at the bottom"
NO_SERVER = "The client never imports the server or the training code"
TRAINING_CYCLES = "Training modules import each other without cycles"
TRAINING_LAYERS = "Training layers: a run's settings below training, export and interpolation above it"
TRAINING = REPO / "training" / "src" / "emotion_ai_training"
CONTRACTS: list[dict] = tomllib.loads(CONFIG.read_text())["tool"]["importlinter"]["contracts"]


def lint_imports(cwd: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`lint-imports` with the repository's contracts, uncached, its report unwrapped. With `pythonpath`, the
    packages found there come first, then this tree's (not the installed copies, which may be another tree's)."""
    env = os.environ | {"COLUMNS": "200"}
    if pythonpath is not None:
        tree = [REPO / package / "src" for package in ("client", "serving", "training")]
        env["PYTHONPATH"] = os.pathsep.join(str(p) for p in [pythonpath, *tree])
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--no-logo", str(CONFIG)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_the_repository_keeps_every_import_contract():
    assert {CYCLES, LAYERS, NO_SERVER, TRAINING_CYCLES, TRAINING_LAYERS} <= {c["name"] for c in CONTRACTS}
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken." in result.stdout
    for contract in CONTRACTS:
        assert f"{contract['name']} KEPT" in result.stdout


@pytest.mark.parametrize(("module", "added", "broken", "reported"), [
    # a function-level import that hides a cycle (client -> ... -> spec -> client)
    ("spec.py", "def _late() -> None:\n    from . import client\n", [CYCLES, LAYERS],
     "emotion_ai.spec is not allowed to import emotion_ai.client"),
    ("result.py", "import emotion_ai_serving.config\n", [NO_SERVER],
     "emotion_ai.result -> emotion_ai_serving.config"),
    # training: a function-level import hiding a cycle (train -> rebuild -> config -> train)
    ("config.py", "def _late() -> None:\n    from emotion_ai_training import train\n",
     [TRAINING_CYCLES, TRAINING_LAYERS],
     "emotion_ai_training.config is not allowed to import emotion_ai_training.train"),
])
def test_the_contracts_break_on_a_forbidden_import(tmp_path, module, added, broken, reported):
    source = TRAINING if module == "config.py" else Path(emotion_ai.__file__).parent
    package = tmp_path / source.name
    shutil.copytree(source, package, ignore=shutil.ignore_patterns("models", "__pycache__"))
    with (package / module).open("a") as f:
        f.write("\n\n" + added)
    result = lint_imports(tmp_path, pythonpath=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"Contracts: {len(CONTRACTS) - len(broken)} kept, {len(broken)} broken." in result.stdout
    for name in broken:
        assert f"{name} BROKEN" in result.stdout
    assert reported in result.stdout
