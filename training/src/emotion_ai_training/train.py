"""Training loop shared by both models: augmented batches, masked loss, checkpoint every epoch, resume.

Each run lives in `runs/<name>/`: `config.json`, `last.keras` (full state, written every epoch),
`best.keras` (best validation score), `state.json`, `history.csv` and `training_curves.png`.
Training knows nothing about serving; `export.py` turns a run into a SavedModel.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path

import keras
import numpy as np

from emotion_ai_training.augment import Augmenter
from emotion_ai_training.config import TrainConfig, build_model
from emotion_ai_training.data import EmotionData, label_remap, load_task
from emotion_ai_training.dataset_files import file_sha256
from emotion_ai_training.distill import DistillationLoss, LabelAccuracy, keypoint_targets, teacher_outputs
from emotion_ai_training.ferplus import aligned_votes, load_ferplus, targets, usable
from emotion_ai_training.losses import KEYPOINTS_LOSSES, MaskedRMSE
from emotion_ai_training.models import precision_policy
from emotion_ai_training.rebuild import copy_weights

log = logging.getLogger(__name__)

#: Validation metric that selects best.keras (and stops early), and whether higher or lower is better.
MONITORS = {"emotion": ("val_accuracy", "max"), "keypoints": ("val_rmse", "min")}
#: Training images whose activations set the batch norms of a folded exported version a run starts from.
UNFOLD_IMAGES = 4096
# ------------------------------------------------------------------------------------------ batches


class Batches(keras.utils.PyDataset):
    """(augmented) batches of float32 [B, H, W, 1] pixels 0..255 and targets."""

    def __init__(self, images: np.ndarray, targets: np.ndarray, batch_size: int,
                 augmenter: Augmenter | None, points: bool, shuffle: bool, seed: int, **kwargs):
        super().__init__(**kwargs)
        self.images, self.targets = images, targets
        self.batch_size, self.augmenter, self.points = batch_size, augmenter, points
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(images)) if shuffle else np.arange(len(images))
        self.shuffle = shuffle

    def __len__(self) -> int:
        return math.ceil(len(self.images) / self.batch_size)

    def __getitem__(self, i: int):
        idx = np.sort(self.order[i * self.batch_size:(i + 1) * self.batch_size])
        x, y = self.images[idx], self.targets[idx]
        if self.augmenter is not None:
            x, y = self.augmenter(x, y) if self.points else (self.augmenter(x), y)
        return x[..., None].astype(np.float32), y

    def on_epoch_end(self) -> None:
        if self.shuffle:
            self.order = self.rng.permutation(len(self.images))


# ------------------------------------------------------------------------------------------ callbacks


class RunCheckpoint(keras.callbacks.Callback):
    """Every epoch: write last.keras + state.json atomically; best.keras when the monitored value improves."""

    def __init__(self, run_dir: Path, monitor: str, mode: str, best: float | None, train_seconds: float):
        super().__init__()
        self.run_dir, self.monitor, self.mode = run_dir, monitor, mode
        self.best, self.train_seconds = best, train_seconds

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        self.t0 = time.perf_counter()

    def _better(self, value: float) -> bool:
        if self.best is None:
            return True
        return value > self.best if self.mode == "max" else value < self.best

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        value = float((logs or {}).get(self.monitor, np.nan))
        if not np.isnan(value) and self._better(value):
            self.best = value
            _atomic_save(self.model, self.run_dir / "best.keras")
        _atomic_save(self.model, self.run_dir / "last.keras")
        self.train_seconds += time.perf_counter() - self.t0
        state = {"epoch": epoch + 1, "monitor": self.monitor, "best": self.best,
                 "train_seconds": round(self.train_seconds, 1)}
        tmp = self.run_dir / "state.json.tmp"
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.run_dir / "state.json")
        plot_history(self.run_dir / "history.csv", self.run_dir / "training_curves.png")


def _read_history(csv_path: Path) -> np.ndarray | None:
    """Rows of a Keras CSVLogger file as a structured array (None when absent or empty)."""
    if not csv_path.exists():
        return None
    rows = np.atleast_1d(np.genfromtxt(csv_path, delimiter=",", names=True))
    return rows if rows.size and rows.dtype.names else None


def best_epoch(run_dir: Path, task: str) -> int | None:
    """1-based epoch that wrote best.keras: the first epoch with the best monitored value in history.csv."""
    rows = _read_history(run_dir / "history.csv")
    monitor, mode = MONITORS[task]
    if rows is None or monitor not in (rows.dtype.names or ()):
        return None
    index = np.nanargmax(rows[monitor]) if mode == "max" else np.nanargmin(rows[monitor])
    return int(rows["epoch"][index]) + 1


def _atomic_save(model: keras.Model, path: Path) -> None:
    tmp = path.with_name(path.stem + ".tmp.keras")
    model.save(tmp)
    tmp.replace(path)


def plot_history(csv_path: Path, png_path: Path) -> None:
    """Loss and validation-metric curves from a Keras CSVLogger file."""
    import matplotlib  # noqa: PLC0415 -- matplotlib only draws the figures, on the Agg backend chosen before pyplot loads

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 -- matplotlib only draws the figures, on the Agg backend chosen before pyplot loads

    rows = _read_history(csv_path)
    if rows is None:
        return
    names = [n for n in rows.dtype.names or () if n != "epoch"]
    pairs = sorted({n.removeprefix("val_") for n in names if n != "learning_rate"})
    fig, axes = plt.subplots(1, len(pairs), figsize=(5 * len(pairs), 3.5), squeeze=False)
    for ax, name in zip(axes[0], pairs, strict=True):
        for key in (name, f"val_{name}"):
            if key in names:
                ax.plot(rows["epoch"] + 1, rows[key], marker=".", label=key)
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=90)
    plt.close(fig)


# ------------------------------------------------------------------------------------------ training


def _load_task_data(cfg: TrainConfig):
    """(x_train, y_train, x_val, y_val) for the task; emotion labels optionally reduced to the 5-class subset."""
    data = load_task(cfg.task, cfg.data, strict=cfg.strict, cache_dir=cfg.cache_dir, seed=cfg.seed)
    x_tr, y_tr = data.subset("train")
    x_va, y_va = data.subset("validation")
    if cfg.labels != "fer2013":
        x_tr, y_tr, x_va, y_va = _ferplus_rows(cfg, data)
    elif isinstance(data, EmotionData):  # the emotion task's data
        names = cfg.label_names()
        if tuple(data.label_names) != names:
            remap = label_remap(data.label_names, names)
            y_tr, y_va = remap[y_tr], remap[y_va]
            x_tr, y_tr = x_tr[y_tr >= 0], y_tr[y_tr >= 0]
            x_va, y_va = x_va[y_va >= 0], y_va[y_va >= 0]
        eye = np.eye(len(names), dtype=np.float32)
        y_tr, y_va = eye[y_tr], eye[y_va]
    if cfg.limit:
        x_tr, y_tr = x_tr[: cfg.limit], y_tr[: cfg.limit]
        x_va, y_va = x_va[: max(cfg.limit // 4, 1)], y_va[: max(cfg.limit // 4, 1)]
    if len(x_tr) == 0 or len(x_va) == 0:
        raise ValueError(f"{cfg.data}: need both a training and a validation split "
                         f"(got {len(x_tr)} train, {len(x_va)} validation rows)")
    if cfg.teacher:
        y_tr, y_va = _distill_targets(cfg, x_tr, y_tr, y_va)
    return x_tr, y_tr, x_va, y_va


def _ferplus_rows(cfg: TrainConfig, data) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_val, y_val) with FER+ targets (`ferplus.targets`), unusable images left out."""
    votes = aligned_votes(data, load_ferplus(cfg.votes, strict=cfg.strict))
    keep, y = usable(votes), targets(votes, cfg.labels, data.labels, cfg.fer2013_weight)
    log.info("FER+ targets (%s): %d of %d images usable (%d left out: no majority among the 7 classes)",
             cfg.labels, int(keep.sum()), len(keep), int((~keep).sum()))
    train, val = keep & (data.split == "train"), keep & (data.split == "validation")
    return data.images[train], y[train], data.images[val], y[val]


def _batches(cfg: TrainConfig, x_tr: np.ndarray, y_tr: np.ndarray, x_va: np.ndarray,
             y_va: np.ndarray) -> tuple[Batches, Batches]:
    """(augmented, shuffled training batches; plain validation batches) of a run."""
    is_points = cfg.task == "keypoints"
    loading = {"workers": 2, "use_multiprocessing": False, "max_queue_size": 8}
    train_batches = Batches(x_tr, y_tr, cfg.batch_size, Augmenter(cfg.augment_config(), cfg.seed), is_points,
                            True, cfg.seed, **loading)
    return train_batches, Batches(x_va, y_va, 256, None, is_points, False, cfg.seed)


def run_batches(cfg: TrainConfig) -> tuple[Batches, Batches]:
    """A run's training and validation batches, as `train` builds them (teacher targets from the cache)."""
    return _batches(cfg, *_load_task_data(cfg))


def _distill_targets(cfg: TrainConfig, x_tr: np.ndarray, y_tr: np.ndarray, y_va: np.ndarray):
    """Training targets with the teacher's outputs: emotion [label ‖ teacher] (validation: [label ‖ label]),
    keypoints the teacher/label mix of distill.keypoint_targets (validation keeps the labels)."""
    teacher = teacher_outputs(cfg.teacher, cfg.task, x_tr, cfg.cache_dir)
    if cfg.task == "keypoints":
        return keypoint_targets(y_tr, teacher, cfg.alpha()), y_va
    if teacher.shape != y_tr.shape:
        raise ValueError(f"teacher outputs {teacher.shape[1:]} do not match the {y_tr.shape[1]} classes trained")
    return np.concatenate([y_tr, teacher], axis=1), np.concatenate([y_va, y_va], axis=1)


def _schedule(cfg: TrainConfig, steps_per_epoch: int) -> keras.optimizers.schedules.LearningRateSchedule:
    """Linear warmup to the peak learning rate, then cosine decay to zero at the end of `cfg.epochs`."""
    total = max(cfg.epochs * steps_per_epoch, 1)
    warmup = min(int(cfg.warmup_epochs * steps_per_epoch), total - 1)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=cfg.learning_rate / 100, decay_steps=total - warmup, alpha=0.0,
        warmup_target=cfg.learning_rate, warmup_steps=warmup,
    )


def _compile(model: keras.Model, cfg: TrainConfig, steps_per_epoch: int) -> None:
    optimizer = keras.optimizers.AdamW(_schedule(cfg, steps_per_epoch), weight_decay=cfg.weight_decay)
    if cfg.task == "emotion" and cfg.teacher:
        model.compile(optimizer, DistillationLoss(cfg.alpha(), cfg.temperature, cfg.label_smoothing),
                      metrics=[LabelAccuracy()])
    elif cfg.task == "emotion":
        model.compile(optimizer, keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing),
                      metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])
    else:
        model.compile(optimizer, KEYPOINTS_LOSSES[cfg.keypoints_loss], metrics=[MaskedRMSE()])


def train(cfg: TrainConfig, resume: bool = False, resume_epochs: int | None = None) -> Path:
    """Train (or resume) a run; returns the run directory.

    A resumed run keeps its saved configuration. `resume_epochs` changes its length (longer or shorter,
    but past the epochs already trained): the cosine schedule is re-planned to end there.
    """
    run_dir = Path(cfg.run_dir)
    state_path = run_dir / "state.json"
    resuming = resume and state_path.exists()
    replan = False
    if resuming:
        cfg = TrainConfig.from_dict(json.loads((run_dir / "config.json").read_text()), strict=True)
        state = json.loads(state_path.read_text())
        done = state["epoch"]
        if resume_epochs is not None and resume_epochs != cfg.epochs:
            if resume_epochs <= done:
                raise ValueError(f"{run_dir} has already trained {done} epochs: --epochs must be more than that")
            cfg.epochs, replan = resume_epochs, True
        log.info("resuming %s", run_dir)
    elif run_dir.exists() and any(run_dir.glob("*.keras")):
        raise FileExistsError(f"{run_dir} already holds a run: pass --resume to continue it, or pick another --name")
    keras.utils.set_random_seed(cfg.seed)
    with precision_policy(cfg.precision):
        x_tr, y_tr, x_va, y_va = _load_task_data(cfg)
        if not resuming:
            cfg.data_sha256 = file_sha256(Path(cfg.data))
        train_batches, val_batches = _batches(cfg, x_tr, y_tr, x_va, y_va)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(asdict(cfg) | {"resnet": asdict(cfg.resnet_config())},
                                                        indent=2))

        monitor, mode = MONITORS[cfg.task]
        initial_epoch, best, seconds = 0, None, 0.0
        if resuming:
            initial_epoch, best, seconds = done, state["best"], state.get("train_seconds", 0.0)
            model = keras.models.load_model(run_dir / "last.keras")
            if replan:
                model.optimizer.learning_rate = _schedule(cfg, len(train_batches))
                log.info("learning-rate schedule re-planned to end at epoch %d", cfg.epochs)
        else:
            model = build_model(cfg)
            if cfg.init_from:
                copy_weights(cfg.init_from, model, x_tr[:UNFOLD_IMAGES, ..., None].astype(np.float32))
                log.info("initial weights from %s", cfg.init_from)
            _compile(model, cfg, len(train_batches))
        log.info("%s: %d train / %d validation rows, %.2f M parameters, epochs %d..%d",
                 cfg.task, len(train_batches.images), len(x_va), model.count_params() / 1e6, initial_epoch + 1,
                 cfg.epochs)
        callbacks = [
            keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=initial_epoch > 0),
            RunCheckpoint(run_dir, monitor, mode, best, seconds),
            keras.callbacks.EarlyStopping(monitor, patience=cfg.patience, mode=mode),
            _Throughput(cfg.batch_size),
        ]
        model.fit(train_batches, validation_data=val_batches, epochs=cfg.epochs, initial_epoch=initial_epoch,
                  callbacks=callbacks, verbose=1 if sys.stderr.isatty() else 2)
        return run_dir


class _Throughput(keras.callbacks.Callback):
    """Logs training images/s per epoch (the figure model sizes were chosen by)."""

    def __init__(self, batch_size: int):
        super().__init__()
        self.batch_size = batch_size

    def on_epoch_begin(self, epoch, logs=None):
        self.t0, self.steps = time.perf_counter(), 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1

    def on_epoch_end(self, epoch, logs=None):
        dt = time.perf_counter() - self.t0
        log.info("epoch %d: %.0f train images/s", epoch + 1, self.steps * self.batch_size / max(dt, 1e-9))
