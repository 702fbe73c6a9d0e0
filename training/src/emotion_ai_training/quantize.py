"""int8 versions of exported models: post-training static quantization with Intel Neural Compressor.

An exported version is exported again with float32 weights (the quantizer reads weights as graph constants),
its activations are calibrated on training images, and its convolutions become oneDNN int8 kernels
(`QuantizedConv2DWithBias...AndRequantize`: weights per output channel, activations per tensor, both
symmetric). The result is saved as a new version of the same model with the source's signature names,
TF Serving warmup requests and model card (plus `quantization`); its validation metrics are measured on the
finished SavedModel.

At run time TensorFlow executes these kernels only with oneDNN on: see `emotion_ai.spec.ONEDNN_ENV`.
Graphs with control flow (a cascade, a mirror view for the unsure faces only) are refused: the quantizer
leaves the convolutions inside a branch in float32, so quantize a version that scores every face alike.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.metadata
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from emotion_ai.spec import INPUT_KEY, MODEL_CARD, ONEDNN_SETTING, SIGNATURE_NAME
from tensorflow.core.protobuf import saved_model_pb2

from emotion_ai_training.config import TrainConfig
from emotion_ai_training.data import load_task
from emotion_ai_training.export import (
    export_version,
    git_commit,
    new_version_folder,
    validation_metrics,
    write_warmup,
)
from emotion_ai_training.rebuild import is_exported_version, training_records

log = logging.getLogger(__name__)

QUANTIZER = "neural-compressor-tf"
CALIBRATION_BATCH = 32
DEFAULT_CALIBRATION_IMAGES = 1024


class Calibration:
    """The quantizer's data loader: (images [B, S, S, 1] uint8, dummy labels) batches of training images."""

    def __init__(self, images: np.ndarray, batch_size: int = CALIBRATION_BATCH) -> None:
        self.images, self.batch_size = images, batch_size

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start in range(0, len(self.images), self.batch_size):
            batch = self.images[start:start + self.batch_size, :, :, None]
            yield batch, np.zeros(len(batch), np.int64)


def calibration_images(images: np.ndarray, count: int, seed: int) -> np.ndarray:
    """`count` training images drawn without replacement (all of them when there are fewer)."""
    if count < 1:
        raise ValueError(f"calibration needs at least one image, got {count}")
    pick = np.random.default_rng(seed).permutation(len(images))[:count]
    return images[np.sort(pick)]


def _signature_def(folder: Path) -> tuple[saved_model_pb2.SavedModel, Any]:
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((folder / "saved_model.pb").read_bytes())
    for meta_graph in saved.meta_graphs:
        if SIGNATURE_NAME in meta_graph.signature_def:
            return saved, meta_graph.signature_def[SIGNATURE_NAME]
    raise ValueError(f"{folder}: no {SIGNATURE_NAME!r} signature")


def restore_signature_names(source: Path, quantized: Path) -> dict[str, str]:
    """Give the quantized SavedModel's signature the source's output names.

    The quantizer freezes the graph and names its outputs `Identity`, `Identity_1`, … in the order of the
    source signature's sorted output names (TensorFlow flattens a dict output by key); the tensors are
    matched in that order and checked by dtype. Returns {output name: tensor name}.

    Raises:
        ValueError: the inputs or outputs differ in number, name or dtype.
    """
    _, wanted = _signature_def(source)
    saved, found = _signature_def(quantized)
    if sorted(found.inputs) != [INPUT_KEY] or sorted(wanted.inputs) != [INPUT_KEY]:
        raise ValueError(f"expected the one input {INPUT_KEY!r}, got {sorted(found.inputs)} "
                         f"for {sorted(wanted.inputs)}")
    names = sorted(wanted.outputs)
    frozen = sorted(found.outputs, key=lambda name: (len(name), name))
    if len(names) != len(frozen):
        raise ValueError(f"{len(frozen)} quantized outputs for the source's {names}")
    outputs = {}
    for name, tensor_alias in zip(names, frozen, strict=True):
        if wanted.outputs[name].dtype != found.outputs[tensor_alias].dtype:
            raise ValueError(f"output {name!r}: the quantized graph's {tensor_alias!r} has another dtype")
        outputs[name] = found.outputs[tensor_alias]
    for alias in list(found.outputs):
        del found.outputs[alias]
    for name, info in outputs.items():
        found.outputs[name].CopyFrom(info)
    (quantized / "saved_model.pb").write_bytes(saved.SerializeToString())
    return {name: info.name for name, info in outputs.items()}


def quantize_version(folder: str | Path, out: str | Path = "models_export", *, version: int | None = None,
                     samples: int = DEFAULT_CALIBRATION_IMAGES, seed: int = 0, evaluate: bool = True,
                     eval_dir: str | Path | None = "runs/eval", votes: str | None = None) -> Path:
    """Quantize exported version `folder` to int8 as `out/<model>/<version>/` and return that folder.

    Args:
        folder: an exported version without control flow (no cascade, no `flip_below`).
        out: the export root; the model's name is the source card's `model`.
        version: the new version number (default: the next free one).
        samples: training images the activation ranges are calibrated on.
        seed: which training images those are.
        evaluate: measure validation metrics on the finished SavedModel into the card.
        eval_dir: where the evaluation's files go (`<eval_dir>/<task>-<version>/`).
        votes: emotion: the FER+ vote file to measure agreement with (default: the run's own).

    Returns:
        The new version folder.

    Raises:
        ValueError: `folder` is a cascade, mirrors only its unsure faces, or is already int8.
        FileNotFoundError: `folder` is not an exported version.
        FileExistsError: the version exists.
        ImportError: the quantizer is not installed (`pip install ./training[quantize]`).
    """
    folder = Path(folder)
    if not is_exported_version(folder):
        raise FileNotFoundError(f"{folder}: not an exported version (needs saved_model.pb and {MODEL_CARD})")
    source = json.loads((folder / MODEL_CARD).read_text())
    if source.get("cascade") or source.get("flip_below") is not None:
        raise ValueError(f"{folder}: a graph with a branch (cascade or flip_below) cannot be quantized whole; "
                         "quantize a version that scores every face alike")
    if source.get("compute_dtype") == "int8":
        raise ValueError(f"{folder} is already int8; quantize its source ({source.get('exported_from')}) instead")
    from neural_compressor.tensorflow import StaticQuantConfig, quantize_model  # noqa: PLC0415 -- optional extra

    kind = source["model"]
    cfg = TrainConfig.from_dict(training_records(source)[0]["config"])
    dataset = load_task(cfg.task, cfg.data, cache_dir=cfg.cache_dir, seed=cfg.seed)
    images = calibration_images(dataset.subset("train")[0], samples, seed)
    base_dir = Path(out) / kind
    base_dir.mkdir(parents=True, exist_ok=True)
    target = new_version_folder(base_dir, version)
    version = int(target.name)
    config = StaticQuantConfig(weight_granularity="per_channel")
    tmp = base_dir / f".tmp-quantize-{os.getpid()}"  # built beside the target, then renamed to it
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with tempfile.TemporaryDirectory(prefix="emotion-ai-quantize-") as scratch_dir:
            scratch = Path(scratch_dir)
            plain = export_version(folder, scratch / "float32", version=1, weights_dtype="float32",
                                   compute_dtype="float32", evaluate=False)
            with contextlib.chdir(scratch):  # the quantizer writes its ./nc_workspace into the working directory
                quantized = quantize_model(str(plain), config, Calibration(images),
                                           calib_iteration=math.ceil(len(images) / CALIBRATION_BATCH))
                if quantized is None:
                    raise RuntimeError(f"{QUANTIZER} could not quantize {folder} (its log says why)")
                quantized.save(str(tmp.absolute()))
            restore_signature_names(plain, tmp)
        variables = tmp / "variables"  # empty (every weight is a constant): servers would wait for its shards
        if variables.is_dir() and not any(variables.iterdir()):
            variables.rmdir()
        size = source["inputs"][INPUT_KEY][1][1]  # the card's [-1, S, S, 1]
        write_warmup(tmp / "assets.extra" / "tf_serving_warmup_requests", kind, size)
        card = {key: value for key, value in source.items() if key not in ("validation_metrics", "exported_from")}
        card |= {
            "version": version,
            "weights_dtype": "int8",
            "compute_dtype": "int8",
            "quantization": {
                "tool": f"{QUANTIZER} {importlib.metadata.version(QUANTIZER)}",
                "scheme": "static post-training: int8 weights per output channel, int8 activations per tensor, "
                          "symmetric, min-max ranges",
                "calibration": {"images": len(images), "split": "train", "seed": seed, "data": str(cfg.data)},
                "runtime": f"oneDNN int8 kernels: TensorFlow (Serving) with oneDNN on ({ONEDNN_SETTING})",
            },
            "exported_from": {"version": source.get("version"), "folder": str(folder),
                              "code_commit": source.get("code_commit"), "weights_dtype": source.get("weights_dtype"),
                              "compute_dtype": source.get("compute_dtype", "float32")},
            "exported": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "code_commit": git_commit(),
            "tensorflow": tf.__version__,
        }
        if evaluate:
            card["validation_metrics"] = validation_metrics(cfg, dataset, base_dir, eval_dir, votes)(tmp, version)
        (tmp / MODEL_CARD).write_text(json.dumps(card, indent=2) + "\n")
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("quantized %s to int8 as %s version %d", folder, kind, version)
    return target
