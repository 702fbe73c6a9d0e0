"""SavedModel export: the serving signatures, the warmup file, the model card, and an atomic version folder.

Contract (spec.py names):
- keypoints: `image` uint8 [batch, 96, 96, 1] → `keypoints` float32 [batch, 15, 2] (x, y in input pixels)
- emotion:   `image` uint8 [batch, 48, 48, 1] → `scores` float32 [batch, K], `classes` string [batch, K]
The signatures' graphs (normalisation, test-time views, ensembles, cascades) are `serving_graph`'s; this
module folds the networks' batch norms, saves those graphs and writes what goes beside them.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from emotion_ai.spec import (
    CLASSES_OUTPUT_KEY,
    EMOTION_INPUT_SIZE,
    EMOTION_MODEL,
    INPUT_KEY,
    KEYPOINT_NAMES,
    KEYPOINTS_INPUT_SIZE,
    KEYPOINTS_MODEL,
    KEYPOINTS_OUTPUT_KEY,
    SCORES_OUTPUT_KEY,
    SIGNATURE_NAME,
)
from emotion_ai.versions import version_dirs
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from emotion_ai_training.batchnorm_folding import fold_batch_norm
from emotion_ai_training.config import TrainConfig, build_model
from emotion_ai_training.data import load_task
from emotion_ai_training.evaluate import evaluate as evaluate_model
from emotion_ai_training.models import precision_policy
from emotion_ai_training.rebuild import (
    MODEL_CARD,
    copy_weights,
    in_compute_dtype,
    is_exported_version,
    rebuild_cascade,
    rebuild_version,
    training_records,
)
from emotion_ai_training.serving_graph import Cascade, EmotionGraph, Ensemble, KeypointsGraph
from emotion_ai_training.train import best_epoch

log = logging.getLogger(__name__)

WARMUP_BATCH_SIZES = (1, 4, 16)
WEIGHT_DTYPES = ("float32", "float16")
SIZE_WARNING_BYTES = 50 * 1024 * 1024


def _folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def next_version(base_dir: Path) -> int:
    """1 + the highest version folder under base_dir (1 if none)."""
    versions = [v for v, _ in version_dirs(base_dir)] if base_dir.is_dir() else []
    return max([0, *versions]) + 1


def new_version_folder(base_dir: Path, version: int | None = None) -> Path:
    """The folder a new version of the model under `base_dir` goes to: `version`, or the next free number.

    Raises:
        ValueError: `version` is not a positive integer.
        FileExistsError: that version exists (versions are immutable).
    """
    version = version or next_version(base_dir)
    if version < 1:
        raise ValueError(f"version must be a positive integer, got {version}")
    target = base_dir / str(version)
    if target.exists():
        raise FileExistsError(f"{target} already exists; versions are immutable, export a new one")
    return target


def write_warmup(path: Path, model_name: str, size: int) -> None:
    """TFRecord of PredictionLog requests that TF Serving replays before reporting AVAILABLE."""
    rng = np.random.default_rng(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for batch in WARMUP_BATCH_SIZES:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model_name
            request.model_spec.signature_name = SIGNATURE_NAME
            pixels = rng.integers(0, 256, size=(batch, size, size, 1), dtype=np.uint8)
            request.inputs[INPUT_KEY].CopyFrom(tf.make_tensor_proto(pixels))
            log_entry = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log_entry.SerializeToString())


def git_commit() -> str:
    """The commit of the code that exports ("unknown" outside a git checkout)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], check=False, capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def export_model(models: keras.Model | Sequence[keras.Model], kind: str, base_dir: str | Path, *,
                 version: int | None = None, labels: tuple[str, ...] | None = None, flip_tta: bool = False,
                 shift_tta: int = 0, weights_dtype: str = "float32", card: dict[str, Any] | None = None,
                 evaluate: Callable[[Path, int], dict[str, Any]] | None = None, fold_batch_norms: bool = True,
                 cascade: Cascade | None = None, temperature: float = 1.0,
                 flip_below: float | None = None) -> Path:
    """Export Keras model(s) as models_export/<kind>/<version>/ and return that folder.

    The networks compute in float32, or in bfloat16 when built under that policy with their batch norms
    already folded in float32 (`rebuild.build_network`; export_runs and export_version do this).

    Several models (same task and outputs, e.g. checkpoints of successive runs) are served as one
    ensemble: the signature returns the mean of their outputs. `flip_tta` also averages the mirror
    image; `shift_tta` (emotion only) also averages copies shifted by that many pixels (see tta_views).
    Batch norms are folded into their convolutions unless `fold_batch_norms` is False (for comparisons).
    `cascade` (emotion only) makes these models the first stage of a two-stage graph: each face whose top
    score is below `cascade.defer_below` gets the fallback version's scores instead (computed for those
    faces only), so the cost per face depends on how sure the first stage is. `temperature` (emotion only)
    serves softmax(log(scores) / T) instead of the scores (temperature scaling: the top class is unchanged,
    the confidence calibrated; `evaluate` reports the temperature fitted on the validation split).
    `flip_below` (emotion, with `flip_tta`) averages the mirror image only for the faces whose one-view top
    score is below it, so the mirror pass costs only what the unsure faces cost.

    The SavedModel, warmup file and model card are written to a hidden temporary folder beside the
    version folder (TF Serving ignores non-numeric names) and renamed into place in one step.
    `evaluate(folder, version)` runs on the finished SavedModel before that rename; what it returns
    goes into the model card as `validation_metrics`, so a published version is never rewritten.
    """
    if kind not in (EMOTION_MODEL, KEYPOINTS_MODEL):
        raise ValueError(f"kind must be {EMOTION_MODEL!r} or {KEYPOINTS_MODEL!r}, got {kind!r}")
    models = [models] if isinstance(models, keras.Model) else list(models)
    if not models:
        raise ValueError("no model to export")
    shapes = {tuple(m.output_shape[1:]) for m in models}
    if len(shapes) != 1:
        raise ValueError(f"ensemble members disagree on the output shape: {sorted(shapes)}")
    if weights_dtype not in WEIGHT_DTYPES:
        raise ValueError(f"weights_dtype must be one of {WEIGHT_DTYPES}, got {weights_dtype!r}")
    if not 0 <= shift_tta < EMOTION_INPUT_SIZE // 4:
        raise ValueError(f"shift_tta must be 0..{EMOTION_INPUT_SIZE // 4 - 1} pixels, got {shift_tta}")
    if temperature != 1.0 and (kind != EMOTION_MODEL or not 0.05 <= temperature <= 20.0):
        raise ValueError(f"temperature is for the emotion model only, within 0.05..20, got {temperature}")
    if shift_tta and kind != EMOTION_MODEL:
        raise ValueError("shift_tta is for the emotion model only (keypoints would move with the shift)")
    if flip_below is not None and (kind != EMOTION_MODEL or not flip_tta or shift_tta or cascade is not None
                                   or not 0.0 < flip_below <= 1.0):
        raise ValueError(f"flip_below is for an emotion model's mirror view (flip_tta, no shift_tta, no cascade), "
                         f"within (0, 1]; got {flip_below}")
    if cascade is not None:
        if kind != EMOTION_MODEL:
            raise ValueError("a cascade is for the emotion model only")
        if not 0.0 < cascade.defer_below <= 1.0:
            raise ValueError(f"defer_below must be in (0, 1], got {cascade.defer_below}")
        if cascade.fallback.flip_below is not None:  # its graph would mirror every face instead
            raise ValueError(f"the fallback {cascade.fallback.folder} mirrors only its unsure faces (flip_below); "
                             "a cascade takes a fallback that scores every face alike")
        if cascade.fallback.card.get("labels") != list(labels or ()):
            raise ValueError(f"the fallback {cascade.fallback.folder} has other labels: "
                             f"{cascade.fallback.card.get('labels')} != {list(labels or ())}")
    base_dir = Path(base_dir)
    base_dir.mkdir(parents=True, exist_ok=True)
    target = new_version_folder(base_dir, version)
    version = int(target.name)
    def served(networks: Sequence[keras.Model]) -> Ensemble:
        return Ensemble([fold_batch_norm(m) for m in networks] if fold_batch_norms else networks, weights_dtype)

    net = served(models)
    if kind == EMOTION_MODEL:
        labels = tuple(labels or ())
        if len(labels) != models[0].output_shape[-1]:
            raise ValueError(f"{len(labels)} labels for a model with {models[0].output_shape[-1]} outputs")
        fallback_net = None if cascade is None else served(cascade.fallback.models)
        module = EmotionGraph(net, labels, flip_tta, shift_tta, fallback_net, cascade, temperature, flip_below)
        size = EMOTION_INPUT_SIZE
        outputs = {SCORES_OUTPUT_KEY: ["float32", [-1, len(labels)]], CLASSES_OUTPUT_KEY: ["string", [-1, len(labels)]]}
    else:
        module, size = KeypointsGraph(net, flip_tta), KEYPOINTS_INPUT_SIZE
        outputs = {KEYPOINTS_OUTPUT_KEY: ["float32", [-1, len(KEYPOINT_NAMES), 2]]}
    tmp = base_dir / f".tmp-export-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tf.saved_model.save(module, str(tmp), signatures={SIGNATURE_NAME: module.serve})
        write_warmup(tmp / "assets.extra" / "tf_serving_warmup_requests", kind, size)
        model_card = {
            "model": kind,
            "version": version,
            "signature": SIGNATURE_NAME,
            "inputs": {INPUT_KEY: ["uint8", [-1, size, size, 1]]},
            "outputs": outputs,
            "labels": list(labels) if labels else None,
            "flip_tta": flip_tta,
            "flip_below": flip_below,
            "shift_tta_pixels": shift_tta,
            "temperature": temperature,
            "ensemble_members": len(models),
            "weights_dtype": weights_dtype,
            "compute_dtype": net.compute_dtype,
            "parameters": int(sum(m.count_params() for m in models)
                              + (cascade.fallback.card.get("parameters", 0) if cascade else 0)),
            "batch_norm_folded": fold_batch_norms,
            "exported": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "code_commit": git_commit(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "license": "Trained on research-licensed data: research / non-commercial use only.",
        } | (card or {})
        if cascade is not None:
            fallback_card = cascade.fallback.card
            model_card["cascade"] = {
                "defer_below": cascade.defer_below,
                "rule": "a face whose top score from the first stage is below defer_below gets the fallback's scores",
                "fallback": {key: fallback_card.get(key) for key in (
                    "model", "version", "flip_tta", "shift_tta_pixels", "ensemble_members", "parameters",
                    "training", "validation_metrics")} | {"folder": str(cascade.fallback.folder)},
            }
        if evaluate is not None:
            model_card["validation_metrics"] = evaluate(tmp, version)
        (tmp / MODEL_CARD).write_text(json.dumps(model_card, indent=2) + "\n")
        size_bytes = _folder_bytes(tmp)
        if size_bytes > SIZE_WARNING_BYTES:
            log.warning("%s version %d is %.0f MB (over 50 MB): consider --weights-dtype float16", kind, version,
                        size_bytes / 2**20)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("exported %s version %d to %s", kind, version, target)
    return target


# ------------------------------------------------------------------------------------------ runs → version


def _run_member(run_dir: Path, checkpoint: str, compute_dtype: str) -> tuple[keras.Model, dict]:
    """Run `run_dir`'s architecture with `checkpoint` loaded (in `compute_dtype`) and its training record."""
    if is_exported_version(run_dir):
        raise ValueError(f"{run_dir} is an exported version, not a training run (`reexport` exports a version again)")
    path = run_dir / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: not a training run (no config.json)")
    config = json.loads(path.read_text())
    cfg = TrainConfig.from_dict(config)
    state = json.loads((run_dir / "state.json").read_text())
    model = build_model(cfg)
    copy_weights(run_dir / checkpoint, model)
    member = {"run": run_dir.name, "checkpoint": checkpoint, "epochs_trained": state["epoch"],
              "checkpoint_epoch": best_epoch(run_dir, cfg.task) if checkpoint == "best.keras" else state["epoch"],
              "train_seconds": state.get("train_seconds"), "config": config}
    record = (run_dir / checkpoint).with_suffix(".json")  # what made a derived checkpoint (interpolate)
    if record.is_file():
        member["checkpoint_epoch"] = None
        member.update(json.loads(record.read_text()))
    return (model if compute_dtype == "float32" else in_compute_dtype(model, config, compute_dtype)), member


def _check_ensemble(members: Sequence[dict]) -> None:
    """All members must share the task, label set and training data."""
    first = members[0]
    for member in members[1:]:
        for key in ("task", "classes", "data_sha256"):
            if member["config"].get(key) != first["config"].get(key):
                raise ValueError(f"{member['run']!r} cannot join an ensemble with {first['run']!r}: "
                                 f"{key} {member['config'].get(key)!r} != {first['config'].get(key)!r}")


def export_runs(run_dirs: Sequence[str | Path], out: str | Path = "models_export", *, version: int | None = None,
                checkpoint: str = "best.keras", flip_tta: bool = False, shift_tta: int = 0,
                weights_dtype: str = "float32", evaluate: bool = True,
                eval_dir: str | Path | None = "runs/eval", fallback: str | Path | None = None,
                defer_below: float | None = None, compute_dtype: str = "float32",
                votes: str | None = None, temperature: float = 1.0, flip_below: float | None = None) -> Path:
    """Export training runs as `out/<task>/<version>/` (several runs of one task: one ensemble).

    Rebuilds each run's architecture in float32, loads `checkpoint` (with `compute_dtype` "bfloat16": folds
    its batch norms, then copies it into the same network built under the bfloat16 policy, the fallback's
    networks too), writes the SavedModel and a model
    card listing every member (run, epochs, configuration with teacher/α/T for distilled runs) and,
    with `evaluate`, its validation metrics (against the FER+ majority too, with `votes` or the run's own
    vote file); the evaluation's JSON and confusion matrix go to
    `eval_dir/<task>-<version>/` (nowhere when None). With `fallback` (a plain exported emotion version,
    e.g. emotion v6; not a cascade) and `defer_below`, the runs become the first stage of a cascade
    (export_model); `temperature` rescales the served scores and `flip_below` limits the mirror view to the
    unsure faces (export_model).
    """
    if (fallback is None) != (defer_below is None):
        raise ValueError("a cascade needs both a fallback version and defer_below")
    if not run_dirs:
        raise ValueError("no run to export")
    with precision_policy("float32"):  # the runs' networks are built and loaded in float32
        models, members = [], []
        for run_dir in run_dirs:
            model, member = _run_member(Path(run_dir), checkpoint, compute_dtype)
            models.append(model)
            members.append(member)
        _check_ensemble(members)
        cfg = TrainConfig.from_dict(members[0]["config"])
        dataset = load_task(cfg.task, cfg.data, cache_dir=cfg.cache_dir, seed=cfg.seed)
        card = {
            "training_data": {"file": Path(cfg.data).name, "sha256": cfg.data_sha256,
                              "splits": {s: int((dataset.split == s).sum()) for s in dict.fromkeys(dataset.split)}},
            "training": members[0] if len(members) == 1 else members,
        } | label_source(cfg)
        base_dir = Path(out) / cfg.task
        return export_model(models, cfg.task, base_dir, version=version,
                            labels=cfg.label_names() if cfg.task == "emotion" else None, flip_tta=flip_tta,
                            shift_tta=shift_tta, weights_dtype=weights_dtype, card=card,
                            evaluate=(validation_metrics(cfg, dataset, base_dir, eval_dir, votes)
                                      if evaluate else None),
                            cascade=(None if fallback is None or defer_below is None
                                     else Cascade(rebuild_version(fallback, compute_dtype), defer_below)),
                            temperature=temperature, flip_below=flip_below)


def export_version(folder: str | Path, out: str | Path = "models_export", *, version: int | None = None,
                   weights_dtype: str = "float16", compute_dtype: str = "float32", evaluate: bool = True,
                   eval_dir: str | Path | None = "runs/eval", votes: str | None = None,
                   flip_below: float | None = None) -> Path:
    """Export an exported version (plain or cascade) again as `out/<model>/<version>/`, its networks rebuilt
    from the SavedModel (`rebuild`) with other storage (`weights_dtype`) or compute (`compute_dtype`)
    types; its views, threshold, temperature and training record carry over, and the card names the source
    version. `flip_below` (export_model) limits its mirror view to the unsure faces (default: the source's)."""
    folder = Path(folder)
    if is_exported_version(folder) and json.loads((folder / MODEL_CARD).read_text()).get("compute_dtype") == "int8":
        raise ValueError(f"{folder} is int8 (quantized, no networks to rebuild): reexport its source instead")
    cascade = None
    try:
        networks = rebuild_version(folder, compute_dtype)
    except ValueError:  # a cascade (any other reason to fail, rebuild_cascade gives too)
        networks, fallback, defer_below = rebuild_cascade(folder, compute_dtype)
        cascade = Cascade(fallback, defer_below)
    source = networks.card
    training = networks.card["training"]
    cfg = TrainConfig.from_dict(training_records(networks.card)[0]["config"])
    dataset = load_task(cfg.task, cfg.data, cache_dir=cfg.cache_dir, seed=cfg.seed) if evaluate else None
    base_dir = Path(out) / source["model"]
    exported_from = {"version": source.get("version"), "folder": str(folder), "code_commit": source.get("code_commit"),
                     "weights_dtype": source.get("weights_dtype"),
                     "compute_dtype": source.get("compute_dtype", "float32")}
    card = ({"training_data": source["training_data"]} if "training_data" in source else {}) | {
        "training": training, "exported_from": exported_from} | label_source(cfg)
    return export_model(networks.models, source["model"], base_dir, version=version,
                        labels=tuple(source["labels"]) if source.get("labels") else None,
                        flip_tta=networks.flip_tta, shift_tta=networks.shift_tta, weights_dtype=weights_dtype,
                        card=card,
                        evaluate=validation_metrics(cfg, dataset, base_dir, eval_dir, votes) if evaluate else None,
                        cascade=cascade, temperature=float(source.get("temperature", 1.0)),
                        flip_below=flip_below if flip_below is not None else networks.flip_below)


def label_source(cfg: Any) -> dict[str, Any]:
    """The model card's `label_source` (emotion: which labels the networks learned) and `license`."""
    if cfg.task != "emotion":
        return {}
    if cfg.labels == "fer2013":
        return {"label_source": "FER-2013 labels (one annotator per image)"}
    return {"label_source": f"FER+ votes of ten annotators per image ({cfg.labels}; Microsoft FERPlus, "
                            f"{Path(cfg.votes).name})",
            "license": "Trained on FER-2013 images (research-licensed: research / non-commercial use only) with "
                       "FER+ labels (MIT licence, Microsoft FERPlus)."}


def validation_metrics(cfg: Any, dataset: Any, base_dir: Path, eval_dir: str | Path | None,
                        votes: str | None = None) -> Callable[[Path, int], dict]:
    """The `evaluate` callback of export_model: validation metrics of the finished SavedModel (the JSON and
    confusion matrix go to `eval_dir/<task>-<version>/`, nowhere when None), against the FER+ majority too
    with `votes` or the run's own vote file."""
    def metrics(folder: Path, number: int) -> dict:
        with tempfile.TemporaryDirectory() as scratch:
            where = Path(eval_dir) / f"{cfg.task}-{number}" if eval_dir is not None else Path(scratch)
            found = evaluate_model(cfg.task, folder, cfg.data, where, seed=cfg.seed, dataset=dataset,
                                   name=str(base_dir / str(number)), votes=votes or cfg.votes or None)
        return {k: v for k, v in found.items() if k not in ("model", "data")}

    return metrics
