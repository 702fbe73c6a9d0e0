"""The two ResNets, in plain Keras 3 (backend-agnostic: TensorFlow for export, JAX works for training).

Both take raw 0..255 grayscale pixels as float input; normalisation is the model's first layer, so
the exported graph owns it. Architecture (both): a 3×3 stem, then stages of basic residual blocks
(two 3×3 conv + batch norm, projection shortcut when shape changes), then a task head.

| model     | input   | stem         | stages (width × blocks @ resolution)       | head                             |
|-----------|---------|--------------|--------------------------------------------|----------------------------------|
| emotion   | 48×48×1 | 64, stride 2 | 64×2 @24 → 128×2 @12 → 256×2 @6 → 512×1 @3 | GAP → dropout → dense K, softmax |
| keypoints | 96×96×1 | 32, stride 2 | 48×1 @48 → 96×2 @24 → 192×2 @12 → 256×1 @6 | heatmaps @24 → soft-argmax       |

Keypoints head (`head="heatmap"`, integral regression): the stages at 24, 12 and 6 are projected to 96
channels and fused top-down (bilinear ×2 upsampling + add, as in an FPN) at stride 4, a 3×3 conv then
gives one 24×24 heatmap per point, and a spatial softmax turns each into its expected (x, y) in input
pixels. Sub-pixel, translation-equivariant and fully differentiable, so the masked loss applies as is.
The original `head="dense"` (flatten → dropout → dense 30) is kept for runs and models trained with it.

Parameter and FLOP counts per configuration are printed by `emotion-ai-train model-info`
(see README); `count_flops` below computes them from the built layers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import keras
from emotion_ai.spec import EMOTION_INPUT_SIZE, KEYPOINT_NAMES, KEYPOINTS_INPUT_SIZE
from keras import layers, ops

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResNetConfig:
    """Widths and depths of one ResNet."""

    stem_width: int
    stem_stride: int
    stage_widths: tuple[int, ...]
    stage_blocks: tuple[int, ...]
    dropout: float = 0.3
    weight_decay: float = 0.0  # L2 on conv kernels; training uses AdamW's decoupled decay instead
    head: str = "dense"  # keypoints: "dense" (flatten → dense) or "heatmap" (FPN heatmaps → soft-argmax)
    head_width: int = 96  # channels of the heatmap decoder


EMOTION_RESNET = ResNetConfig(
    stem_width=64, stem_stride=2, stage_widths=(64, 128, 256, 512), stage_blocks=(2, 2, 2, 1),
    dropout=0.4,
)
KEYPOINTS_RESNET = ResNetConfig(
    stem_width=32, stem_stride=2, stage_widths=(48, 96, 192, 256), stage_blocks=(1, 2, 2, 1),
    dropout=0.0, head="heatmap",
)
#: Distilled students (`--teacher`): the same blocks, a quarter to a third of the compute.
EMOTION_SMALL_RESNET = ResNetConfig(
    stem_width=32, stem_stride=2, stage_widths=(32, 64, 128, 256), stage_blocks=(2, 2, 2, 1), dropout=0.3,
)
#: A wider emotion student (2.5 M parameters, about 210 MFLOPs per view) for the accuracy bar the small one missed.
EMOTION_MEDIUM_RESNET = ResNetConfig(
    stem_width=40, stem_stride=2, stage_widths=(40, 80, 160, 320), stage_blocks=(2, 2, 2, 1), dropout=0.3,
)
#: Wider still (1.44x emotion_medium's compute): emotion_medium reached 0.678 with training accuracy only 0.70.
EMOTION_LARGE_RESNET = ResNetConfig(
    stem_width=48, stem_stride=2, stage_widths=(48, 96, 192, 384), stage_blocks=(2, 2, 2, 1), dropout=0.3,
)
#: emotion_small with a stride-1 stem: the stages work at 48-24-12-6 instead of 24-12-6-3 (4x its compute at
#: the same 1.6 M parameters). Tried on the students' plateau under 0.69; `emotion_h1` read 0.681 mirrored.
EMOTION_HIRES_RESNET = replace(EMOTION_SMALL_RESNET, stem_stride=1)
KEYPOINTS_SMALL_RESNET = ResNetConfig(
    stem_width=24, stem_stride=2, stage_widths=(24, 48, 96, 192), stage_blocks=(1, 2, 2, 1),
    dropout=0.0, head="heatmap", head_width=64,
)
#: Seconds-long configuration for tests and CI smoke runs.
TINY_RESNET = ResNetConfig(
    stem_width=8, stem_stride=2, stage_widths=(8, 16), stage_blocks=(1, 1), dropout=0.0, head="heatmap", head_width=8,
)
#: Output stride of the keypoint heatmaps (24×24 for a 96×96 input).
HEATMAP_STRIDE = 4
HEADS = ("dense", "heatmap")
#: Named architectures (`emotion-ai-train train --arch NAME`, `model-info`): name → (task, configuration).
ARCHITECTURES: dict[str, tuple[str, ResNetConfig]] = {
    "emotion": ("emotion", EMOTION_RESNET),
    "emotion_small": ("emotion", EMOTION_SMALL_RESNET),
    "emotion_medium": ("emotion", EMOTION_MEDIUM_RESNET),
    "emotion_large": ("emotion", EMOTION_LARGE_RESNET),
    "emotion_hires": ("emotion", EMOTION_HIRES_RESNET),
    "keypoints": ("keypoints", KEYPOINTS_RESNET),
    "keypoints_small": ("keypoints", KEYPOINTS_SMALL_RESNET),
}


@contextmanager
def precision_policy(name: str) -> Iterator[None]:
    """Keras's global precision policy set to `name` inside the block, and the caller's restored after it
    (on errors too), so that training, averaging or rebuilding in bfloat16 leaves no policy behind."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _l2(wd: float):
    return keras.regularizers.L2(wd) if wd else None


def _conv(width: int, stride: int, wd: float, name: str) -> layers.Conv2D:
    return layers.Conv2D(
        width, 3, strides=stride, padding="same", use_bias=False,
        kernel_initializer="he_normal", kernel_regularizer=_l2(wd), name=name,
    )


def _basic_block(x, width: int, stride: int, wd: float, name: str):
    shortcut = x
    y = _conv(width, stride, wd, f"{name}_conv1")(x)
    y = layers.BatchNormalization(name=f"{name}_bn1")(y)
    y = layers.Activation("relu", name=f"{name}_relu1")(y)
    y = _conv(width, 1, wd, f"{name}_conv2")(y)
    y = layers.BatchNormalization(name=f"{name}_bn2", gamma_initializer="zeros")(y)
    if stride != 1 or x.shape[-1] != width:
        shortcut = layers.Conv2D(
            width, 1, strides=stride, use_bias=False, kernel_initializer="he_normal",
            kernel_regularizer=_l2(wd), name=f"{name}_proj",
        )(x)
        shortcut = layers.BatchNormalization(name=f"{name}_proj_bn")(shortcut)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.Activation("relu", name=f"{name}_out")(y)


def _backbone(inputs, cfg: ResNetConfig) -> list:
    """Outputs of every stage, highest resolution first."""
    stages = []
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="normalize")(inputs)
    x = _conv(cfg.stem_width, cfg.stem_stride, cfg.weight_decay, "stem_conv")(x)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.Activation("relu", name="stem_relu")(x)
    for s, (width, blocks) in enumerate(zip(cfg.stage_widths, cfg.stage_blocks, strict=True)):
        for b in range(blocks):
            stride = 2 if (b == 0 and s > 0) else 1
            x = _basic_block(x, width, stride, cfg.weight_decay, f"stage{s + 1}_block{b + 1}")
        stages.append(x)
    return stages


@keras.saving.register_keras_serializable("emotion_ai")
class SoftArgmax2D(layers.Layer):
    """[B, H, W, K] heatmap logits → [B, K, 2] expected (x, y) in input pixels under a spatial softmax.

    Cell (i, j) of a stride-s map covers input pixels whose centre is at ((j + 0.5)·s − 0.5, (i + 0.5)·s − 0.5),
    pixel centres being at integer coordinates (the Kaggle convention used throughout).
    """

    def __init__(self, stride: int, **kwargs):
        super().__init__(**kwargs)
        self.stride = stride

    def call(self, logits):
        _, h, w, k = logits.shape
        logits = ops.cast(logits, "float32")
        p = ops.reshape(ops.softmax(ops.reshape(logits, (-1, h * w, k)), axis=1), (-1, h, w, k))
        gx = (ops.arange(w, dtype="float32") + 0.5) * self.stride - 0.5
        gy = (ops.arange(h, dtype="float32") + 0.5) * self.stride - 0.5
        x = ops.sum(ops.sum(p, axis=1) * gx[None, :, None], axis=1)
        y = ops.sum(ops.sum(p, axis=2) * gy[None, :, None], axis=1)
        return ops.stack([x, y], axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[3], 2)

    def get_config(self):
        return super().get_config() | {"stride": self.stride}


def _heatmap_head(stages: list, cfg: ResNetConfig, input_size: int):
    """FPN-style top-down fusion of the stages at ≤ input/HEATMAP_STRIDE resolution → soft-argmax points."""
    target = input_size // HEATMAP_STRIDE
    feats = [f for f in stages if f.shape[1] <= target]
    if not feats or feats[0].shape[1] != target:
        raise ValueError(f"heatmap head needs a stage at {target}×{target}; stages are at "
                         f"{[f.shape[1] for f in stages]}")

    def project(f, name):
        return layers.Conv2D(cfg.head_width, 1, use_bias=False, kernel_initializer="he_normal", name=name)(f)

    x = project(feats[-1], f"head_proj{len(feats)}")
    for i in range(len(feats) - 2, -1, -1):
        x = layers.UpSampling2D(2, interpolation="bilinear", name=f"head_up{i + 1}")(x)
        x = layers.Add(name=f"head_add{i + 1}")([x, project(feats[i], f"head_proj{i + 1}")])
    x = _conv(cfg.head_width, 1, cfg.weight_decay, "head_conv")(x)
    x = layers.BatchNormalization(name="head_bn")(x)
    x = layers.Activation("relu", name="head_relu")(x)
    logits = layers.Conv2D(len(KEYPOINT_NAMES), 1, dtype="float32", name="heatmaps")(x)
    return SoftArgmax2D(HEATMAP_STRIDE, dtype="float32", name="keypoints")(logits)


def build_emotion_model(num_classes: int = 7, cfg: ResNetConfig = EMOTION_RESNET) -> keras.Model:
    """48×48×1 pixels (0..255) → class probabilities [batch, num_classes]."""
    inputs = keras.Input((EMOTION_INPUT_SIZE, EMOTION_INPUT_SIZE, 1), name="image")
    x = _backbone(inputs, cfg)[-1]
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(cfg.dropout, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="scores")(x)
    return keras.Model(inputs, outputs, name="emotion_resnet")


def build_keypoints_model(cfg: ResNetConfig = KEYPOINTS_RESNET) -> keras.Model:
    """96×96×1 pixels (0..255) → keypoints [batch, 15, 2] in input pixels (x, y)."""
    if cfg.head not in HEADS:
        raise ValueError(f"unknown keypoints head {cfg.head!r}; expected one of {HEADS}")
    inputs = keras.Input((KEYPOINTS_INPUT_SIZE, KEYPOINTS_INPUT_SIZE, 1), name="image")
    stages = _backbone(inputs, cfg)
    if cfg.head == "heatmap":
        return keras.Model(inputs, _heatmap_head(stages, cfg, KEYPOINTS_INPUT_SIZE), name="keypoints_resnet")
    x = layers.Flatten(name="flatten")(stages[-1])
    x = layers.Dropout(cfg.dropout, name="dropout")(x)
    x = layers.Dense(2 * len(KEYPOINT_NAMES), dtype="float32", name="offsets")(x)
    # Offsets are predicted around the frame centre in units of half the frame.
    half = KEYPOINTS_INPUT_SIZE / 2.0
    x = layers.Rescaling(half, offset=half, dtype="float32", name="to_pixels")(x)
    outputs = layers.Reshape((len(KEYPOINT_NAMES), 2), dtype="float32", name="keypoints")(x)
    return keras.Model(inputs, outputs, name="keypoints_resnet")


def count_flops(model: keras.Model) -> int:
    """Multiply-adds ×2 of the conv and dense layers for one image (BN/ReLU/add ignored)."""
    flops = 0
    for layer in model.layers:
        if isinstance(layer, layers.Conv2D):
            _, h, w, c_out = layer.output.shape
            kh, kw = layer.kernel_size
            c_in = layer.input.shape[-1]
            flops += 2 * h * w * kh * kw * c_in * c_out
        elif isinstance(layer, layers.Dense):
            flops += 2 * layer.input.shape[-1] * layer.units
    return int(flops)
