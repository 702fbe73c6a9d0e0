"""A training run's settings (`TrainConfig`, a run's config.json) and the network they describe.

The lowest layer of the training code that knows runs: training, rebuilding exported versions, export and
interpolation all read a run's settings through `TrainConfig.from_dict` and build its architecture with
`build_model`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import keras
from emotion_ai.spec import EMOTION_LABELS, EMOTION_LABELS_5

from emotion_ai_training.augment import EMOTION_AUGMENT, KEYPOINTS_AUGMENT, AugmentConfig
from emotion_ai_training.ferplus import LABEL_SOURCES
from emotion_ai_training.models import (
    ARCHITECTURES,
    TINY_RESNET,
    ResNetConfig,
    build_emotion_model,
    build_keypoints_model,
)

#: Weight of the teacher in distillation when `TrainConfig.distill_alpha` is None (see distill.py).
DISTILL_ALPHA = {"emotion": 0.9, "keypoints": 0.5}
#: The temperature that softens the emotion teacher's and student's scores in distillation.
DISTILL_TEMPERATURE = 4.0
#: Settings of experiments that left the code (docs/experiments.md), still in the config.json of older runs and
#: in the training records of exported model cards: each with the value that meant "off", and the commit that
#: still holds its code. `TrainConfig.from_dict` drops them.
RETIRED_FIELDS: dict[str, tuple[object, str]] = {
    "teacher_copies": (0, "ecae1ad"),
    "online_teacher": (False, "ecae1ad"),
    "keep_epochs": (0, "ecae1ad"),
    "init_member": (0, "ecae1ad"),
}


@dataclass
class TrainConfig:
    task: str
    data: str
    run_dir: str
    epochs: int = 30
    batch_size: int = 128
    learning_rate: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    patience: int = 10
    seed: int = 0
    precision: str = "mixed_bfloat16"
    classes: int = 7  # emotion: 7, or 5 for the angry/disgust/happy/sad/surprise subset
    keypoints_loss: str = "l1"  # "l1" or "mse" (masked either way)
    tiny: bool = False  # seconds-long smoke configuration
    strict: bool = False  # fail on bad dataset rows instead of skipping them
    limit: int = 0  # use at most this many training rows (0 = all)
    cache_dir: str | None = None
    data_sha256: str = ""
    init_from: str = ""  # start from these weights (a checkpoint or a one-network exported version, same architecture)
    dropout: float | None = None  # None: the architecture's default
    erase_probability: float | None = None  # random erasing; None: the task's default augmentation
    resnet: dict = field(default_factory=dict)
    arch: str = ""  # a name in models.ARCHITECTURES; "" = the task's default architecture
    teacher: list[str] = field(default_factory=list)  # SavedModels / .keras checkpoints to distil from
    distill_alpha: float | None = None  # teacher weight; None: DISTILL_ALPHA[task]
    temperature: float = DISTILL_TEMPERATURE  # emotion distillation softening
    labels: str = "fer2013"  # emotion targets: a name in ferplus.LABEL_SOURCES
    votes: str = ""  # the FER+ vote file, for labels ferplus-*
    fer2013_weight: float = 0.0  # labels ferplus-*: weight of FER-2013's one-hot label mixed into the FER+ target

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be a positive integer, got {self.epochs}")
        if self.arch and (self.arch not in ARCHITECTURES or ARCHITECTURES[self.arch][0] != self.task):
            names = sorted(n for n, (task, _) in ARCHITECTURES.items() if task == self.task)
            raise ValueError(f"unknown {self.task} architecture {self.arch!r}; expected one of {names}")
        if self.distill_alpha is not None and not 0.0 <= self.distill_alpha <= 1.0:
            raise ValueError(f"distill_alpha must be in [0, 1], got {self.distill_alpha}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if self.labels not in LABEL_SOURCES:
            raise ValueError(f"labels must be one of {LABEL_SOURCES}, got {self.labels!r}")
        if self.labels != "fer2013" and (self.task != "emotion" or self.classes != 7 or not self.votes):
            raise ValueError(f"labels {self.labels} need the emotion task, 7 classes and a FER+ vote file (votes)")
        if not 0.0 <= self.fer2013_weight <= 1.0 or (self.fer2013_weight and self.labels == "fer2013"):
            raise ValueError("fer2013_weight must be in [0, 1] and goes with labels ferplus-*")
        for name in ("dropout", "erase_probability", "label_smoothing"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value}")

    @classmethod
    def from_dict(cls, config: dict, strict: bool = False) -> TrainConfig:
        """The TrainConfig of a run's config.json (or a model card's training record), without the settings of
        retired experiments (`RETIRED_FIELDS`). With `strict` (to train on from it), a retired setting that was
        on is a ValueError naming the commit whose code still runs it; otherwise it is ignored (its network is
        built and loaded the same way)."""
        known = {k: v for k, v in config.items() if k not in RETIRED_FIELDS}
        if strict:
            used = [f"{k}={v!r} (code at {RETIRED_FIELDS[k][1]})" for k, v in config.items()
                    if k in RETIRED_FIELDS and v not in (None, RETIRED_FIELDS[k][0])]
            if used:
                raise ValueError(f"this run used settings whose code has left: {', '.join(used)}")
        return cls(**known)

    def resnet_config(self) -> ResNetConfig:
        if self.resnet:
            fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in self.resnet.items()}
            return ResNetConfig(**fields)
        base = TINY_RESNET if self.tiny else ARCHITECTURES[self.arch or self.task][1]
        return base if self.dropout is None else replace(base, dropout=self.dropout)

    def augment_config(self) -> AugmentConfig:
        base = EMOTION_AUGMENT if self.task == "emotion" else KEYPOINTS_AUGMENT
        return base if self.erase_probability is None else replace(base, erase_probability=self.erase_probability)

    def alpha(self) -> float:
        return DISTILL_ALPHA[self.task] if self.distill_alpha is None else self.distill_alpha

    def label_names(self) -> tuple[str, ...]:
        return EMOTION_LABELS_5 if self.classes == 5 else EMOTION_LABELS


def build_model(cfg: TrainConfig) -> keras.Model:
    """The untrained network of a run's architecture and class count, under the current Keras policy."""
    if cfg.task == "emotion":
        return build_emotion_model(len(cfg.label_names()), cfg.resnet_config())
    return build_keypoints_model(cfg.resnet_config())
