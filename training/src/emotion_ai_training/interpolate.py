"""Weight-space interpolation of a fine-tuned run with the weights it started from (WiSE-FT, Wortsman et al.
2022, "Robust fine-tuning of zero-shot models").

A run trained with `--init-from` moved its network from the starting weights θ₀ to θ₁ (`best.keras`). The
networks on the line θ₀ + α·(θ₁ − θ₀) often hold most of what each end does well: for an emotion run
fine-tuned on FER+ targets from a FER-2013-trained version, they trade agreement with the FER+ consensus
against accuracy on FER-2013's labels along a curve that lies above the straight line between the two ends.
Each interpolated network costs exactly what either end costs.

Batch-norm statistics are re-estimated for every α (`batchnorm_folding.recalibrate_batch_norm`), on the
same training images the starting weights were unfolded with. `interpolate_run` writes
`interpolated_<α>.keras` beside `best.keras` (`export --checkpoint` serves one) and reports, per α, the
validation metrics of the network alone and with its mirror image (what `export --flip-tta` serves).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
from emotion_ai.spec import EMOTION_LABELS

from emotion_ai_training.batchnorm_folding import recalibrate_batch_norm
from emotion_ai_training.config import TrainConfig, build_model
from emotion_ai_training.data import load_emotion
from emotion_ai_training.evaluate import emotion_metrics
from emotion_ai_training.ferplus import aligned_votes, load_ferplus
from emotion_ai_training.models import precision_policy
from emotion_ai_training.rebuild import copy_weights
from emotion_ai_training.train import UNFOLD_IMAGES

log = logging.getLogger(__name__)

REPORT = "interpolated.json"
#: Images per batch-norm re-estimation batch.
BATCH = 256


def checkpoint_name(alpha: float) -> str:
    """The file `interpolate_run` writes for `alpha`, e.g. interpolated_0.70.keras."""
    return f"interpolated_{alpha:.2f}.keras"


def interpolate_weights(start: Sequence[np.ndarray], end: Sequence[np.ndarray], alpha: float) -> list[np.ndarray]:
    """start + alpha · (end − start) for floating-point arrays; integer arrays (seed-generator states) keep
    `start`'s values.

    Raises:
        ValueError: the two weight lists differ in length or shapes.
    """
    if len(start) != len(end) or any(s.shape != e.shape for s, e in zip(start, end, strict=False)):
        raise ValueError("the two networks' weights do not match (different architectures)")
    return [(s + alpha * (e.astype(np.float64) - s)).astype(s.dtype) if s.dtype.kind == "f" else s
            for s, e in zip(start, end, strict=True)]


def interpolate_run(run_dir: str | Path, alphas: Sequence[float], checkpoint: str = "best.keras",
                    votes: str | None = None) -> dict:
    """Interpolate an emotion run's `checkpoint` with its `--init-from` weights at each of `alphas`.

    Args:
        run_dir: a run trained with `--init-from` (a checkpoint or an exported version).
        alphas: where on the line from the start (0) to `checkpoint` (1) to take the networks.
        checkpoint: the run's checkpoint at α = 1.
        votes: a FER+ vote file of the run's images (default: the run's own `--votes`, if any), for the
            agreement with the FER+ majority beside FER-2013-label accuracy.

    Returns:
        The report written to `interpolated.json`: per α, the checkpoint written and the validation metrics
        (accuracy on FER-2013's labels, agreement with the FER+ majority) with one view and with the mirror.
        Rows of an earlier report of the same run and checkpoint are kept (a later run adds α values).
        Each checkpoint gets a JSON file beside it naming its start, end and α, which `export` copies into
        the model card.

    Raises:
        ValueError: the run is not an emotion run, has no `--init-from`, or an α is outside [0, 1].
    """
    run_dir = Path(run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    cfg = TrainConfig.from_dict(config)
    if cfg.task != "emotion" or not cfg.init_from:
        raise ValueError(f"{run_dir}: interpolation needs an emotion run trained with --init-from")
    if config.get("init_member"):  # started from one member of an ensemble version, which copy_weights refuses
        raise ValueError(f"{run_dir}: started from member {config['init_member']} of {cfg.init_from} "
                         "(--init-member, code at ecae1ad); interpolate it with that code")
    if not alphas or any(not 0.0 <= a <= 1.0 for a in alphas):
        raise ValueError(f"alphas must lie in [0, 1], got {list(alphas)}")
    dataset = load_emotion(cfg.data, cache_dir=cfg.cache_dir)
    votes = votes or cfg.votes or None
    vote_rows = aligned_votes(dataset, load_ferplus(votes)) if votes else None
    train_images, _ = dataset.subset("train")
    unfold_images = train_images[:UNFOLD_IMAGES, ..., None].astype(np.float32)
    val_images = dataset.subset("validation")[0][..., None].astype(np.float32)
    with precision_policy(cfg.precision):
        model = build_model(cfg)
        copy_weights(cfg.init_from, model, unfold_images)
        start = model.get_weights()
        end = keras.models.load_model(run_dir / checkpoint, compile=False).get_weights()
        rows = []
        for alpha in alphas:
            model.set_weights(interpolate_weights(start, end, alpha))
            recalibrate_batch_norm(model, (unfold_images[i:i + BATCH] for i in range(0, len(unfold_images), BATCH)))
            plain = model.predict(val_images, batch_size=BATCH, verbose=0)
            mirror = (plain + model.predict(val_images[:, :, ::-1], batch_size=BATCH, verbose=0)) / 2.0
            name = checkpoint_name(alpha)
            model.save(run_dir / name)
            row = {"alpha": alpha, "checkpoint": name}
            for view, scores in (("one_view", plain), ("mirror", mirror)):
                metrics = emotion_metrics(scores.astype(np.float32), EMOTION_LABELS, dataset, vote_rows)
                row[view] = {"fer2013_accuracy": metrics["accuracy"],
                             "ferplus_agreement": metrics.get("ferplus", {}).get("agreement")}
            log.info("alpha %.2f: %s", alpha, row)
            # beside the checkpoint, for the model card of an export that takes it (export.checkpoint_record)
            record = {"interpolated": {"start": cfg.init_from, "end": checkpoint, "alpha": alpha}}
            (run_dir / name).with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
            rows.append(row)
    report = {"run": str(run_dir), "start": cfg.init_from, "end": checkpoint, "votes": votes,
              "alphas": _merged(run_dir / REPORT, cfg.init_from, checkpoint, rows)}
    (run_dir / REPORT).write_text(json.dumps(report, indent=2) + "\n")
    return report


def _merged(path: Path, start: str, end: str, rows: list[dict]) -> list[dict]:
    """`rows` with the rows of an earlier report at `path` for the same start and end, by α (new rows win)."""
    earlier = json.loads(path.read_text()) if path.is_file() else {}
    kept = earlier.get("alphas", []) if (earlier.get("start"), earlier.get("end")) == (start, end) else []
    by_alpha = {row["alpha"]: row for row in [*kept, *rows]}
    return [by_alpha[alpha] for alpha in sorted(by_alpha)]
