"""Rebuild the Keras networks inside an exported version folder from its SavedModel and model card.

A version exported by `export.export_model` stores each ensemble member's weights, in the order of the
Keras model's variables, under the module's `net`; its model card keeps each member's training
configuration. Building that architecture again and copying the stored values back (float16 storage is
cast to float32) gives the served networks as Keras models without their training checkpoints: what a
cascade (`export --fallback`) needs, and what a lost `runs/` folder no longer has.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras

from emotion_ai_training.batchnorm_folding import fold_batch_norm


@dataclass(frozen=True)
class ExportedEnsemble:
    """The networks of one exported version and the test-time views its graph averages over."""

    folder: Path
    models: list[keras.Model]
    flip_tta: bool
    shift_tta: int
    card: dict[str, Any]


def rebuild_version(folder: str | Path) -> ExportedEnsemble:
    """The Keras networks of version `folder` (e.g. models_export/emotion/6), with weights as served.

    Raises FileNotFoundError for a folder without a SavedModel or model card and ValueError for a version
    whose networks cannot be rebuilt (a cascade, or a card whose members do not match the stored weights).
    """
    import tensorflow as tf

    from emotion_ai_training.train import TrainConfig, build_model

    folder = Path(folder)
    card_path = folder / "model_card.json"
    if not (folder / "saved_model.pb").is_file() or not card_path.is_file():
        raise FileNotFoundError(f"{folder}: not an exported version (needs saved_model.pb and model_card.json)")
    card = json.loads(card_path.read_text())
    if card.get("cascade"):
        raise ValueError(f"{folder} is a cascade; rebuild its fallback version instead")
    members = card.get("training")
    members = [members] if isinstance(members, dict) else list(members or [])
    if not members:
        raise ValueError(f"{folder}: the model card lists no training runs to rebuild")
    stored = tf.saved_model.load(str(folder))
    trainable, non_trainable = list(stored.net.trainable), list(stored.net.non_trainable)
    if len(trainable) != len(members):
        raise ValueError(f"{folder}: {len(members)} members in the card, {len(trainable)} stored")
    keras.mixed_precision.set_global_policy("float32")
    models = []
    for member, values, fixed in zip(members, trainable, non_trainable, strict=True):
        model = build_model(TrainConfig(**member["config"]))
        if card.get("batch_norm_folded"):
            model = fold_batch_norm(model)
        targets = [*model.trainable_variables, *model.non_trainable_variables]
        sources = [*values, *fixed]
        if [tuple(v.shape) for v in targets] != [tuple(v.shape) for v in sources]:
            raise ValueError(f"{folder}: member {member.get('run')!r} does not match its stored weights")
        for target, source in zip(targets, sources, strict=True):
            target.assign(tf.cast(source, "float32"))
        models.append(model)
    return ExportedEnsemble(folder, models, bool(card.get("flip_tta")), int(card.get("shift_tta_pixels") or 0), card)
