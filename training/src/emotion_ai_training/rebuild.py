"""Rebuild the Keras networks inside an exported version folder from its SavedModel and model card.

A version exported by `export.export_model` stores each ensemble member's weights, in the order of the
Keras model's variables, under the module's `net`; its model card keeps each member's training
configuration. Building that architecture again and copying the stored values back (float16 storage is
cast to the rebuilt network's own variable dtype) gives the served networks as Keras models without their
training checkpoints: what a cascade (`export --fallback`) and a re-export (`export_version`: other
storage or compute dtype) need, and what a lost `runs/` folder no longer has. A cascade's two stages are
rebuilt with `rebuild_cascade`. `copy_weights` loads a checkpoint's or a one-network version's weights into
a network (`train --init-from`, `interpolate`, export of a run).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from emotion_ai.spec import MODEL_CARD
from emotion_ai.versions import has_saved_model

from emotion_ai_training.batchnorm_folding import fold_batch_norm, unfold_batch_norm
from emotion_ai_training.config import TrainConfig, build_model
from emotion_ai_training.models import precision_policy


@dataclass(frozen=True)
class ExportedEnsemble:
    """The networks of one exported version and the test-time views its graph averages over (`flip_below`:
    the mirror view only for faces whose one-view top score is below it)."""

    folder: Path
    models: list[keras.Model]
    flip_tta: bool
    shift_tta: int
    card: dict[str, Any]
    flip_below: float | None = None


COMPUTE_DTYPES = ("float32", "bfloat16")


def rebuild_version(folder: str | Path, compute_dtype: str = "float32") -> ExportedEnsemble:
    """The Keras networks of version `folder` (e.g. models_export/keypoints/6), with weights as served.

    `compute_dtype` "bfloat16" builds them under Keras's "bfloat16" policy (the layers the architecture
    pins to float32, its output head, stay float32). Raises FileNotFoundError for a folder without a
    SavedModel or model card and ValueError for a version whose networks cannot be rebuilt (a cascade:
    see `rebuild_cascade`; a card whose members do not match the stored weights).
    """
    folder = Path(folder)
    card = _card(folder)
    if card.get("cascade"):
        raise ValueError(f"{folder} is a cascade; rebuild it with rebuild_cascade")
    return _rebuilt(folder, tf.saved_model.load(str(folder)).net, card, compute_dtype)


def rebuild_cascade(folder: str | Path,
                    compute_dtype: str = "float32") -> tuple[ExportedEnsemble, ExportedEnsemble, float]:
    """A cascade version's first stage, its fallback (its card holds the fallback's views and members,
    and the labels) and its `defer_below` threshold. ValueError for a version that is not a cascade."""
    folder = Path(folder)
    card = _card(folder)
    cascade = card.get("cascade")
    if not cascade:
        raise ValueError(f"{folder} is not a cascade")
    stored = tf.saved_model.load(str(folder))
    fallback_card = cascade["fallback"] | {"labels": card.get("labels"),
                                           "batch_norm_folded": card.get("batch_norm_folded")}
    first = _rebuilt(folder, stored.net, card, compute_dtype)
    fallback = _rebuilt(folder, stored.fallback_net, fallback_card, compute_dtype)
    return first, fallback, float(cascade["defer_below"])


def rebuild_first_stage(folder: str | Path, compute_dtype: str = "float32") -> ExportedEnsemble:
    """A plain version's networks (`rebuild_version`), or a cascade's first stage (`rebuild_cascade`)."""
    folder = Path(folder)
    if _card(folder).get("cascade"):
        return rebuild_cascade(folder, compute_dtype)[0]
    return rebuild_version(folder, compute_dtype)


def is_exported_version(path: Path) -> bool:
    """Whether `path` is an exported version folder (a SavedModel with its model card), not a run."""
    return has_saved_model(path) and (path / MODEL_CARD).is_file()


def training_records(card: dict[str, Any]) -> list[dict[str, Any]]:
    """A card's `training` as a list: one record per member (a single member's card holds it bare)."""
    records = card.get("training")
    return [records] if isinstance(records, dict) else list(records or [])


def copy_weights(source: str | Path, model: keras.Model, images: np.ndarray | None = None) -> None:
    """Load the weights of a .keras checkpoint, or of the one network of an exported version folder (rebuilt
    from the SavedModel: `rebuild_first_stage`, a cascade's first stage), into `model` (e.g. one
    built under another precision policy). A version whose batch norms were folded at export is unfolded
    (`batchnorm_folding.unfold_batch_norm`) with statistics measured on `images` [N, H, W, 1]. ValueError
    when they do not fit: another architecture or class count, an ensemble of several networks, or a folded
    version without `images`."""
    if is_exported_version(Path(source)):
        stored = rebuild_first_stage(source)
        if len(stored.models) != 1:
            raise ValueError(f"{source} is an ensemble of {len(stored.models)} networks; start from one network "
                             "(a run's checkpoint or a one-network version)")
        if stored.card.get("batch_norm_folded"):
            if images is None:
                raise ValueError(f"{source}: its batch norms were folded at export; unfolding needs images")
            try:
                unfold_batch_norm(stored.models[0], model, images)
            except ValueError as exc:
                raise ValueError(f"{source}: its weights do not fit the {model.name} model ({exc})") from None
            return
        weights = stored.models[0].get_weights()
    else:
        weights = keras.models.load_model(source, compile=False).get_weights()
    if [w.shape for w in weights] != [tuple(w.shape) for w in model.weights]:
        raise ValueError(f"{source}: its weights do not fit the {model.name} model "
                         "(different architecture or class count)")
    model.set_weights(weights)


def _card(folder: Path) -> dict[str, Any]:
    if not is_exported_version(folder):
        raise FileNotFoundError(f"{folder}: not an exported version (needs saved_model.pb and {MODEL_CARD})")
    return json.loads((folder / MODEL_CARD).read_text())


def _rebuilt(folder: Path, net: Any, card: dict[str, Any], compute_dtype: str) -> ExportedEnsemble:
    """Networks of the stored ensemble `net` (its `trainable` / `non_trainable` weight copies), built from
    the training configurations of `card`'s members under `compute_dtype`."""
    members = training_records(card)
    if not members:
        raise ValueError(f"{folder}: the model card lists no training runs to rebuild")
    trainable, non_trainable = list(net.trainable), list(net.non_trainable)
    if len(trainable) != len(members):
        raise ValueError(f"{folder}: {len(members)} members in the card, {len(trainable)} stored")
    folded = bool(card.get("batch_norm_folded"))
    models = []
    for member, values, fixed in zip(members, trainable, non_trainable, strict=True):
        # An unfolded version is rebuilt in float32 and folded before any bfloat16 rounding.
        model = build_network(member["config"], folded, compute_dtype if folded else "float32")
        if not assign_weights(model, [*values, *fixed]):
            raise ValueError(f"{folder}: member {member.get('run')!r} does not match its stored weights")
        models.append(model if folded or compute_dtype == "float32"
                      else in_compute_dtype(model, member["config"], compute_dtype))
    return ExportedEnsemble(folder, models, bool(card.get("flip_tta")), int(card.get("shift_tta_pixels") or 0), card,
                            card.get("flip_below"))


def build_network(config: dict[str, Any], folded: bool, compute_dtype: str = "float32") -> keras.Model:
    """A run's architecture (its config.json), batch norms folded or not, under Keras's `compute_dtype`
    policy (float32 or bfloat16; the layers the architecture pins to float32 stay float32)."""
    if compute_dtype not in COMPUTE_DTYPES:
        raise ValueError(f"compute_dtype must be one of {COMPUTE_DTYPES}, got {compute_dtype!r}")
    with precision_policy(compute_dtype):
        model = build_model(TrainConfig.from_dict(config))
        return fold_batch_norm(model) if folded else model


def assign_weights(model: keras.Model, values: Sequence[Any]) -> bool:
    """Copy `values` (trainable, then non-trainable, as tensors or arrays) into `model`'s variables, each cast
    to its variable's dtype; False (nothing copied) when their shapes do not match."""
    targets = [*model.trainable_variables, *model.non_trainable_variables]
    if [tuple(v.shape) for v in targets] != [tuple(v.shape) for v in values]:
        return False
    for target, source in zip(targets, values, strict=True):
        target.assign(tf.cast(source, target.dtype))
    return True


def in_compute_dtype(model: keras.Model, config: dict[str, Any], compute_dtype: str) -> keras.Model:
    """float32 `model` (the run `config`'s architecture) with its batch norms folded, copied into the same
    folded network built under `compute_dtype`: folding happens in float32, before any rounding."""
    folded = fold_batch_norm(model)
    network = build_network(config, folded=True, compute_dtype=compute_dtype)
    assign_weights(network, [*folded.trainable_variables, *folded.non_trainable_variables])
    return network
