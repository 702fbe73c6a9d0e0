"""Weight averaging of a run's epoch checkpoints (stochastic weight averaging, Izmailov et al. 2018).

A run trained with `--keep-epochs K` keeps its last K epochs' weights in `runs/<name>/epochs/`. Their mean,
with batch-norm statistics re-estimated on the training images (the averaged weights' own activations),
often generalises better than any single epoch. `average_run` writes it as `averaged.keras` beside
`best.keras`, and reports the validation metric of both, measured the same way; `export --checkpoint
averaged.keras` serves it.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import keras
import numpy as np

from emotion_ai_training.models import precision_policy

log = logging.getLogger(__name__)

EPOCHS_DIR = "epochs"
AVERAGED = "averaged.keras"
AVERAGED_REPORT = "averaged.json"
_EPOCH_FILE = re.compile(r"epoch_(\d+)\.npz$")


def epoch_path(run_dir: Path, epoch: int) -> Path:
    """Where epoch `epoch` (1-based, as in state.json) keeps its weights."""
    return run_dir / EPOCHS_DIR / f"epoch_{epoch:03d}.npz"


def kept_epochs(run_dir: Path) -> list[int]:
    """The epochs whose weights `run_dir` keeps, in order."""
    folder = run_dir / EPOCHS_DIR
    found = (_EPOCH_FILE.search(p.name) for p in folder.glob("epoch_*.npz")) if folder.is_dir() else ()
    return sorted(int(m.group(1)) for m in found if m)


def save_epoch_weights(model: keras.Model, path: Path) -> None:
    """`model.get_weights()` (the layers' variables, no optimizer state) as an .npz, written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"tmp_{path.name}")
    with tmp.open("wb") as f:
        np.savez(f, *model.get_weights())
    tmp.replace(path)


def mean_weights(paths: Iterable[Path]) -> list[np.ndarray]:
    """The mean of the weight lists saved at `paths` (`save_epoch_weights`, one architecture). Integer
    variables (seed-generator states) keep the first file's values."""
    total: list[np.ndarray] = []
    first: list[np.ndarray] = []
    n = 0
    for path in paths:
        with np.load(path) as f:
            values = [f[f"arr_{i}"] for i in range(len(f.files))]
        if not first:
            first, total = values, [v.astype(np.float64) for v in values]
        elif [v.shape for v in values] != [v.shape for v in first]:
            raise ValueError(f"{path}: its weights do not match those of the first checkpoint")
        else:
            total = [t + v for t, v in zip(total, values, strict=True)]
        n += 1
    if not first:
        raise ValueError("no checkpoints to average")
    return [(t / n).astype(f.dtype) if f.dtype.kind == "f" else f for t, f in zip(total, first, strict=True)]


def _batch_norms(layer: keras.layers.Layer) -> Iterator[keras.layers.BatchNormalization]:
    if isinstance(layer, keras.layers.BatchNormalization):
        yield layer
    for child in getattr(layer, "layers", ()):
        yield from _batch_norms(child)


def recalibrate_batch_norm(model: keras.Model, batches: Iterable) -> int:
    """Re-estimate every batch-norm layer's moving mean and variance as the plain average of their batch
    statistics over `batches` (x or (x, y) items), the weights unchanged. Returns the batches used."""
    layers = list(_batch_norms(model))
    saved = [bn.momentum for bn in layers]
    for bn in layers:
        bn.moving_mean.assign(np.zeros(bn.moving_mean.shape, "float32"))
        bn.moving_variance.assign(np.ones(bn.moving_variance.shape, "float32"))
    k = 0
    try:
        for item in batches:
            x = item[0] if isinstance(item, tuple) else item
            for bn in layers:
                bn.momentum = k / (k + 1)  # moving = (k * moving + batch) / (k + 1): the running mean
            model(x, training=True)
            k += 1
    finally:
        for bn, momentum in zip(layers, saved, strict=True):
            bn.momentum = momentum
    return k


def average_run(run_dir: Path, first: int | None = None, last: int | None = None) -> dict:
    """Average the kept epochs `first`..`last` of `run_dir` (default: all kept), re-estimate batch norm on
    the run's training images, write `averaged.keras` and `averaged.json`; returns that report."""
    from emotion_ai_training.train import MONITORS, TrainConfig, run_batches

    cfg = TrainConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    kept = kept_epochs(run_dir)
    chosen = [e for e in kept if (first is None or e >= first) and (last is None or e <= last)]
    if not chosen:
        raise ValueError(f"{run_dir}: no kept epochs in {first or 'start'}..{last or 'end'} (kept: {kept or 'none'}; "
                         "train with --keep-epochs K to keep them)")
    with precision_policy(cfg.precision):
        model = keras.models.load_model(run_dir / "last.keras")
        train_batches, val_batches = run_batches(cfg)
        monitor, _ = MONITORS[cfg.task]
        metric = monitor.removeprefix("val_")
        best = keras.models.load_model(run_dir / "best.keras")
        best_value = float(best.evaluate(val_batches, return_dict=True, verbose=0)[metric])
        model.set_weights(mean_weights(epoch_path(run_dir, e) for e in chosen))
        used = recalibrate_batch_norm(model, (train_batches.augmented(i) for i in range(len(train_batches))))
        value = float(model.evaluate(val_batches, return_dict=True, verbose=0)[metric])
        model.save(run_dir / AVERAGED)
        report = {"epochs": chosen, "batch_norm_batches": used, "metric": metric, "averaged": round(value, 4),
                  "best_checkpoint": round(best_value, 4)}
        (run_dir / AVERAGED_REPORT).write_text(json.dumps(report, indent=2))
        log.info("%s: %s of epochs %d..%d %.4f (best.keras %.4f)", run_dir, metric, chosen[0], chosen[-1], value,
                 best_value)
        return report
