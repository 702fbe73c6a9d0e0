"""The graphs of the serving signatures: an ensemble of networks on stored weight copies, its test-time views,
the emotion cascade and mirror-when-unsure stages, and the two `tf.Module`s that `export` saves.

Normalisation is inside the graph; batch norms arrive folded (`batchnorm_folding`); weights may be stored as
float16 and the networks may compute in bfloat16 (rebuilt under Keras's bfloat16 policy: `rebuild.build_network`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import keras
import tensorflow as tf
from emotion_ai.spec import (
    CLASSES_OUTPUT_KEY,
    EMOTION_INPUT_SIZE,
    FLIP_PERMUTATION,
    INPUT_KEY,
    KEYPOINTS_INPUT_SIZE,
    KEYPOINTS_OUTPUT_KEY,
    SCORES_OUTPUT_KEY,
)

from emotion_ai_training.evaluate import TEMPERATURE_FLOOR
from emotion_ai_training.rebuild import COMPUTE_DTYPES, ExportedEnsemble


def compute_dtype_of(models: Sequence[keras.Model]) -> str:
    """The one compute dtype of an ensemble's networks (float32 or bfloat16: their first layer with weights;
    a folded copy's model-level policy is float32 whatever its layers'); ValueError when they differ."""
    dtypes = {next(layer.compute_dtype for layer in m.layers if layer.weights) for m in models}  # the stem's
    if len(dtypes) != 1 or not dtypes <= set(COMPUTE_DTYPES):
        raise ValueError(f"the networks must all compute in one of {COMPUTE_DTYPES}, got {sorted(dtypes)}")
    return dtypes.pop()


class Ensemble(tf.Module):
    """Mean output of one or more Keras models, run statelessly on copies of their weights.

    A float32 variable's copy is stored as `weights_dtype` (float16 halves the SavedModel) and cast back
    at call time; a bfloat16 network's bfloat16 variables (`compute_dtype`) are stored as they are, so
    nothing is converted per call. Inputs enter in the networks' compute dtype, outputs leave as float32.
    The Keras models themselves are not tracked: only the copies are saved.
    """

    def __init__(self, models: Sequence[keras.Model], weights_dtype: str):
        super().__init__()

        def stored(v: keras.Variable) -> tf.Variable:
            dtype = v.dtype if v.dtype == "bfloat16" else weights_dtype
            return tf.Variable(tf.cast(v.value, dtype), trainable=False)

        self.trainable = [[stored(v) for v in m.trainable_variables] for m in models]
        self.non_trainable = [[stored(v) for v in m.non_trainable_variables] for m in models]
        self.compute_dtype = compute_dtype_of(models)
        calls = [(m.stateless_call, [v.dtype for v in m.trainable_variables],
                  [v.dtype for v in m.non_trainable_variables]) for m in models]

        def mean_output(x):
            x = tf.cast(x, self.compute_dtype)
            outputs = []
            for (call, dtypes, fixed_dtypes), trainable, non_trainable in zip(
                    calls, self.trainable, self.non_trainable, strict=True):
                y, _ = call([tf.cast(v, d) for v, d in zip(trainable, dtypes, strict=True)],
                            [tf.cast(v, d) for v, d in zip(non_trainable, fixed_dtypes, strict=True)], x,
                            training=False)
                outputs.append(tf.cast(y, tf.float32))
            return tf.add_n(outputs) / float(len(outputs))

        self._mean_output = mean_output

    def __call__(self, x):
        return self._mean_output(x)


def tta_views(x: tf.Tensor, flip: bool, shift: int) -> list[tf.Tensor]:
    """The test-time views of a batch [B, H, W, C]: the image; with `shift`, the image moved by ±shift
    pixels along each axis (border pixels repeated); with `flip`, the mirror image of each of those."""
    views = [x]
    if shift:
        size = x.shape[1]
        for d in (shift, -shift):
            index = tf.clip_by_value(tf.range(size) + d, 0, size - 1)
            views += [tf.gather(x, index, axis=1), tf.gather(x, index, axis=2)]
    if flip:
        views += [tf.reverse(v, axis=[2]) for v in views]
    return views


def mean_over_views(net: Ensemble, x: tf.Tensor, flip_tta: bool, shift_tta: int, num_labels: int) -> tf.Tensor:
    """`net`'s scores [B, num_labels] for the images `x`, averaged over their test-time views (`tta_views`),
    all views in one batch."""
    views = tta_views(x, flip_tta, shift_tta)
    scores = net(tf.concat(views, axis=0))  # one batch of all views
    return tf.reduce_mean(tf.reshape(scores, [len(views), -1, num_labels]), axis=0)


@dataclass(frozen=True)
class Cascade:
    """The second stage of an emotion cascade: the faces whose top score from the first stage is below
    `defer_below` are answered by `fallback` (an exported version's networks and views) instead."""

    fallback: ExportedEnsemble
    defer_below: float


def rescore_unsure(scores: tf.Tensor, x: tf.Tensor, below: float,
                   rescore: Callable[[tf.Tensor, tf.Tensor], tf.Tensor]) -> tf.Tensor:
    """`scores` [B, K] of the images `x`, where each face whose top score is below `below` gets
    `rescore(its images, its scores)` instead; `rescore` runs on those faces alone (a cascade's second stage,
    or the mirror view of the unsure faces)."""
    unsure = tf.where(tf.reduce_max(scores, axis=1) < below)

    def rescored() -> tf.Tensor:
        return tf.tensor_scatter_nd_update(scores, unsure, rescore(tf.gather_nd(x, unsure),
                                                                   tf.gather_nd(scores, unsure)))

    # Skipped when every face is sure: the networks must not see an empty batch (oneDNN rejects it).
    return tf.cond(tf.shape(unsure)[0] > 0, rescored, lambda: scores)


class EmotionGraph(tf.Module):
    """The emotion signature: `image` uint8 → `scores` (the ensemble's mean over its views, optionally a
    cascade's and temperature-scaled) and `classes`."""

    def __init__(self, net: Ensemble, labels: tuple[str, ...], flip_tta: bool, shift_tta: int,
                 fallback_net: Ensemble | None = None, cascade: Cascade | None = None, temperature: float = 1.0,
                 flip_below: float | None = None):
        """`cascade` (with `fallback_net`, its networks' weight copies) adds a second stage; `temperature` rescales
        the final scores (`evaluate.rescale`); `flip_below` limits the mirror view to the unsure faces."""
        super().__init__()
        self.flip_below = flip_below
        self.temperature = temperature
        self.net = net
        self.labels = tf.constant(list(labels))
        self.num_labels = len(labels)
        self.flip_tta = flip_tta
        self.shift_tta = shift_tta
        self.fallback_net = fallback_net
        self.defer_below = cascade.defer_below if cascade else None
        self.fallback_views = (cascade.fallback.flip_tta, cascade.fallback.shift_tta) if cascade else None

    @tf.function(input_signature=[tf.TensorSpec([None, EMOTION_INPUT_SIZE, EMOTION_INPUT_SIZE, 1], tf.uint8,
                                                name=INPUT_KEY)])
    def serve(self, image):
        x = tf.cast(image, tf.float32)
        if self.flip_below is None:
            scores = mean_over_views(self.net, x, self.flip_tta, self.shift_tta, self.num_labels)
        else:  # the mirror view for the unsure faces only
            scores = rescore_unsure(self.net(x), x, self.flip_below,
                                    lambda faces, plain: (plain + self.net(tf.reverse(faces, axis=[2]))) / 2.0)
        if self.fallback_net is not None:  # only the faces the first stage is unsure of reach the second
            fallback, below, views = self.fallback_net, self.defer_below, self.fallback_views
            assert below is not None and views is not None  # set together with fallback_net
            scores = rescore_unsure(scores, x, below, lambda faces, _: mean_over_views(
                fallback, faces, *views, self.num_labels))
        if self.temperature != 1.0:
            scores = tf.nn.softmax(tf.math.log(tf.maximum(scores, TEMPERATURE_FLOOR)) / self.temperature, axis=1)
        classes = tf.broadcast_to(self.labels[None, :], tf.shape(scores))
        return {SCORES_OUTPUT_KEY: scores, CLASSES_OUTPUT_KEY: classes}


class KeypointsGraph(tf.Module):
    """The keypoints signature: `image` uint8 → `keypoints` (x, y in input pixels; optionally averaged with the
    mirror image's, its points swapped back)."""

    def __init__(self, net: Ensemble, flip_tta: bool):
        super().__init__()
        self.net = net
        self.flip_tta = flip_tta

    @tf.function(input_signature=[tf.TensorSpec([None, KEYPOINTS_INPUT_SIZE, KEYPOINTS_INPUT_SIZE, 1], tf.uint8,
                                                name=INPUT_KEY)])
    def serve(self, image):
        x = tf.cast(image, tf.float32)
        points = self.net(x)
        if self.flip_tta:
            mirrored = tf.gather(self.net(tf.reverse(x, axis=[2])), list(FLIP_PERMUTATION), axis=1)
            unflipped = tf.stack([(KEYPOINTS_INPUT_SIZE - 1) - mirrored[..., 0], mirrored[..., 1]], axis=-1)
            points = (points + unflipped) / 2.0
        return {KEYPOINTS_OUTPUT_KEY: points}
