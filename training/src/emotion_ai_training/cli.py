"""`emotion-ai-train`: describe data, train, evaluate and export the two models."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from emotion_ai.detect import DEFAULT_DETECTOR, DETECTORS
from emotion_ai.spec import MODEL_CARD, use_onednn

from emotion_ai_training.dataset_files import DATA_ENV, DATA_FILES, VOTES_FILE, default_data, default_votes
from emotion_ai_training.ferplus import LABEL_SOURCES

if TYPE_CHECKING:
    from emotion_ai_training.config import TrainConfig

log = logging.getLogger("emotion_ai_training")

TASKS = tuple(DATA_FILES)
#: How the help texts name the data folder.
DATA_HELP = f"${DATA_ENV}, else ../shared/data"


#: `train` options that set a TrainConfig field: flag → (field, type, choices). Their defaults are
#: TrainConfig's (one source for the CLI and the Python API).
_TRAIN_FIELDS: dict[str, tuple[str, type, tuple | None]] = {
    "--epochs": ("epochs", int, None),
    "--batch-size": ("batch_size", int, None),
    "--lr": ("learning_rate", float, None),
    "--weight-decay": ("weight_decay", float, None),
    "--patience": ("patience", int, None),
    "--seed": ("seed", int, None),
    "--precision": ("precision", str, ("mixed_bfloat16", "float32")),
    "--classes": ("classes", int, (7, 5)),
    "--dropout": ("dropout", float, None),
    "--erase": ("erase_probability", float, None),
    "--label-smoothing": ("label_smoothing", float, None),
    "--keypoints-loss": ("keypoints_loss", str, ("l1", "mse")),
    "--arch": ("arch", str, None),
    "--alpha": ("distill_alpha", float, None),
    "--temperature": ("temperature", float, None),
    "--limit": ("limit", int, None),
    "--init-from": ("init_from", str, None),
    "--labels": ("labels", str, LABEL_SOURCES),
    "--votes": ("votes", str, None),
    "--fer2013-weight": ("fer2013_weight", float, None),
}
_TRAIN_HELP = {
    "--epochs": "epochs of the cosine schedule; with --resume, changes the run's length",
    "--lr": "peak learning rate (cosine schedule, linear warmup)",
    "--patience": "early stopping on the validation metric",
    "--classes": "emotion: 7 classes or the 5-class subset",
    "--dropout": "dropout before the head (default: the architecture's)",
    "--erase": "random-erasing probability in augmentation (default: the task's augmentation)",
    "--label-smoothing": "emotion cross-entropy label smoothing",
    "--keypoints-loss": "masked loss for keypoints",
    "--arch": "named architecture (emotion-ai-train model-info lists them; default: the task's)",
    "--alpha": "teacher weight in distillation (default: config.DISTILL_ALPHA, 0.9 emotion, 0.5 keypoints)",
    "--temperature": "emotion distillation temperature",
    "--limit": "use at most N training rows (0 = all)",
    "--init-from": "start a new run (new LR schedule) from a checkpoint's weights, e.g. runs/emotion/best.keras, or "
                   "from a one-network exported version's (rebuilt from its SavedModel)",
    "--labels": "emotion targets: FER-2013's label, the FER+ majority of ten annotators (one-hot), or their vote "
                "distribution (soft labels)",
    "--fer2013-weight": "with --labels ferplus-*: mix FER-2013's one-hot label into the target with this weight "
                        "(0..1; default 0: FER+ alone)",
    "--votes": f"the FER+ vote file (fer2013new.csv) for --labels ferplus-* (default: {VOTES_FILE} in {DATA_HELP})",
}


def _add_train(sub) -> None:
    from dataclasses import fields

    from emotion_ai_training.config import TrainConfig

    defaults = {f.name: f.default for f in fields(TrainConfig)}
    p = sub.add_parser("train", help="train a model (checkpoint every epoch; --resume continues)")
    p.add_argument("task", choices=TASKS)
    p.add_argument("--data", help=f"dataset file or folder (default: the copy in {DATA_HELP})")
    p.add_argument("--name", help="run name under --runs (default: the task name)")
    p.add_argument("--runs", default="runs", help="folder holding runs (default: runs)")
    for flag, (name, kind, choices) in _TRAIN_FIELDS.items():
        default = defaults[name]
        text = _TRAIN_HELP.get(flag, name.replace("_", " "))
        if default not in (None, "") and "default" not in text:
            text += f" (default: {default})"
        p.add_argument(flag, dest=name, type=kind, choices=choices, help=text)
    p.add_argument("--teacher", nargs="+", metavar="MODEL",
                   help="distil from these exported SavedModels or .keras checkpoints (outputs averaged, cached)")
    p.add_argument("--tiny", action="store_true", help="seconds-long smoke configuration")
    p.add_argument("--strict", action="store_true", help="fail on bad dataset rows instead of skipping them")
    p.add_argument("--cache-dir", default=defaults["cache_dir"] or "cache",
                   help="where parsed datasets and teacher outputs are cached (default: cache)")
    p.add_argument("--resume", action="store_true", help="continue runs/<name> from its last checkpoint")
    p.add_argument("--preview", metavar="PNG", help="write a grid of augmented samples and exit")


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of a parsed `train` command line: options not given keep TrainConfig's defaults."""
    from emotion_ai_training.config import TrainConfig

    given = {name: getattr(args, name) for name, _, _ in _TRAIN_FIELDS.values() if getattr(args, name) is not None}
    if given.get("labels", "fer2013") != "fer2013":
        given.setdefault("votes", str(default_votes()))
    return TrainConfig(
        task=args.task, data=args.data or str(default_data(args.task)),
        run_dir=str(Path(args.runs) / (args.name or args.task)), tiny=args.tiny, strict=args.strict,
        cache_dir=args.cache_dir, teacher=list(args.teacher or []), **given,
    )


def _cmd_train(args) -> int:
    from emotion_ai_training.train import train

    cfg = train_config_from_args(args)
    if args.preview:
        return _preview(cfg, Path(args.preview))
    run_dir = train(cfg, resume=args.resume, resume_epochs=args.epochs)
    log.info("run written to %s", run_dir)
    return 0


def _preview(cfg, out: Path) -> int:
    import numpy as np

    from emotion_ai_training.augment import Augmenter, write_preview
    from emotion_ai_training.data import KeypointsData, load_task

    d = load_task(cfg.task, cfg.data, cache_dir=cfg.cache_dir)
    idx = np.random.default_rng(cfg.seed).choice(len(d.images), 6, replace=False)
    points = d.points[idx] if isinstance(d, KeypointsData) else None
    write_preview(out, d.images[idx], points, Augmenter(cfg.augment_config(), cfg.seed))
    log.info("wrote %s", out)
    return 0


def _add_describe(sub) -> None:
    p = sub.add_parser("describe", help="summarise a dataset (PNGs + text) before training")
    p.add_argument("data", help="dataset file or folder")
    p.add_argument("--task", choices=TASKS, help="default: guessed from the file")
    p.add_argument("--out", default="runs/describe", help="output folder (default: runs/describe)")
    p.add_argument("--cache-dir", default="cache")
    p.add_argument("--strict", action="store_true", help="fail on bad rows instead of skipping and counting them")
    p.add_argument("--votes", metavar="CSV", help="emotion: a FER+ vote file of the same images (fer2013new.csv), for "
                                                  "its vote statistics and its disagreement with FER-2013's labels")


def _cmd_describe(args) -> int:
    from emotion_ai_training.describe import describe

    summary = describe(args.data, args.out, args.task, args.cache_dir, args.strict, args.votes)
    sys.stdout.write((Path(args.out) / "summary.txt").read_text())
    return 0 if summary else 1


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="metrics of an exported SavedModel on the validation split (JSON + PNG)")
    p.add_argument("model_dir", help="a version folder, e.g. models_export/emotion/1")
    p.add_argument("--data", help=f"dataset (default: the copy in {DATA_HELP})")
    p.add_argument("--out", help="output folder (default: runs/eval/<model>-<version>)")
    p.add_argument("--seed", type=int, default=0, help="keypoints: split seed used in training")
    p.add_argument("--cache-dir", default="cache")
    _add_votes(p)


def _add_votes(p, default: str = f"{VOTES_FILE} in {DATA_HELP} with the default data, when present; '' for none",
               ) -> None:
    p.add_argument("--votes", metavar="CSV",
                   help="emotion: the FER+ vote file of the data's images, to measure agreement with the FER+ majority "
                        f"too (default: {default})")


def votes_for(args: argparse.Namespace, data: str | None = None) -> str | None:
    """The FER+ vote file a command evaluates with: --votes, or the default copy's beside the default data."""
    if args.votes is not None:
        return args.votes or None
    return str(default_votes()) if data is None and default_votes().is_file() else None


def _model_kind(model_dir: Path) -> str:
    card = model_dir / MODEL_CARD
    if card.exists():
        return json.loads(card.read_text())["model"]
    return model_dir.resolve().parent.name


def _cmd_evaluate(args) -> int:
    from emotion_ai_training.evaluate import evaluate

    model_dir = Path(args.model_dir)
    if not (model_dir / "saved_model.pb").exists():
        raise FileNotFoundError(f"{model_dir}: no saved_model.pb (expected a version folder such as "
                                "models_export/emotion/1)")
    kind = _model_kind(model_dir)
    data = args.data or str(default_data(kind))
    out = Path(args.out or f"runs/eval/{kind}-{model_dir.name}")
    result = evaluate(kind, model_dir, data, out, args.cache_dir, args.seed,
                      votes=votes_for(args, args.data) if kind == "emotion" else None)
    brief = {k: v for k, v in result.items() if not isinstance(v, (dict, list))}
    sys.stdout.write(json.dumps(brief, indent=2) + "\n")
    log.info("wrote %s", out / "metrics.json")
    return 0


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="export runs' best checkpoints as models_export/<model>/<version>/")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                   help="a run folder, e.g. runs/emotion; several are exported as one ensemble (the graph averages "
                        "their outputs over the views; the first member's data and seed are used to evaluate)")
    p.add_argument("--out", default="models_export", help="export root (default: models_export)")
    p.add_argument("--version", type=int, help="version number (default: next free)")
    p.add_argument("--checkpoint", default="best.keras", help="checkpoint file in each run (default: best.keras)")
    p.add_argument("--flip-tta", action="store_true", help="average with the mirrored image inside the graph")
    _add_flip_below(p)
    p.add_argument("--shift-tta", type=int, default=0, metavar="PIXELS",
                   help="emotion: also average copies shifted by ±PIXELS along each axis (4 more views, "
                        "8 with --flip-tta); default 0 (off)")
    _add_dtypes(p, weights_default="float32")
    p.add_argument("--no-evaluate", action="store_true", help="skip writing validation metrics into the model card")
    p.add_argument("--fallback", metavar="VERSION_DIR",
                   help="emotion: export a cascade whose second stage is this exported version (e.g. "
                        "emotion v6, in git history; not a cascade); needs --defer-below")
    p.add_argument("--defer-below", type=float, metavar="SCORE",
                   help="cascade: faces whose top score from the runs is below SCORE get the fallback's scores")
    p.add_argument("--eval-dir", default="runs/eval",
                   help="where the evaluation's JSON and confusion matrix go (default: runs/eval/<model>-<version>)")
    _add_votes(p, default="the run's own, if it trained on FER+ votes")
    p.add_argument("--temperature", type=float, default=1.0, metavar="T",
                   help="emotion: serve softmax(log(scores) / T), calibrated scores with the same top class; "
                        "`evaluate` reports the T fitted on the validation split (default: 1, the scores as trained)")


def _add_flip_below(p) -> None:
    p.add_argument("--flip-below", type=float, metavar="SCORE",
                   help="emotion, with a mirror view: mirror only the faces whose one-view top score is below SCORE "
                        "(the mirror pass runs on those alone); default: every face")


def _add_dtypes(p, weights_default: str) -> None:
    p.add_argument("--weights-dtype", default=weights_default, choices=("float32", "float16"),
                   help=f"storage type of float32 weights (float16 halves the size); default {weights_default}")
    p.add_argument("--compute-dtype", default="float32", choices=("float32", "bfloat16"),
                   help="what the networks compute in: bfloat16 (weights stored as bfloat16, the output head "
                        "float32) is about twice as fast at batch 8 on CPUs with AVX512-BF16/AMX and slower on "
                        "others; default float32")


def _cmd_export(args) -> int:
    from emotion_ai_training.export import export_runs

    target = export_runs([Path(r) for r in args.run_dirs], args.out, version=args.version,
                         checkpoint=args.checkpoint, flip_tta=args.flip_tta, shift_tta=args.shift_tta,
                         weights_dtype=args.weights_dtype, evaluate=not args.no_evaluate, eval_dir=args.eval_dir,
                         fallback=args.fallback, defer_below=args.defer_below, compute_dtype=args.compute_dtype,
                         votes=args.votes or None, temperature=args.temperature, flip_below=args.flip_below)
    sys.stdout.write(f"{target}\n")
    return 0


def _add_reexport(sub) -> None:
    p = sub.add_parser("reexport", help="export an exported version (plain or cascade) again with other storage or "
                                        "compute types, its networks rebuilt from the SavedModel (no runs needed)")
    p.add_argument("version_dir", help="an exported version folder, e.g. models_export/emotion_accurate/8")
    p.add_argument("--out", default="models_export", help="export root (default: models_export)")
    p.add_argument("--version", type=int, help="version number (default: next free)")
    _add_dtypes(p, weights_default="float16")
    _add_flip_below(p)
    p.add_argument("--no-evaluate", action="store_true", help="skip writing validation metrics into the model card")
    p.add_argument("--eval-dir", default="runs/eval",
                   help="where the evaluation's JSON and confusion matrix go (default: runs/eval/<model>-<version>)")
    _add_votes(p, default="the run's own, if it trained on FER+ votes")


def _cmd_reexport(args) -> int:
    from emotion_ai_training.export import export_version

    target = export_version(Path(args.version_dir), args.out, version=args.version, weights_dtype=args.weights_dtype,
                            compute_dtype=args.compute_dtype, evaluate=not args.no_evaluate, eval_dir=args.eval_dir,
                            votes=args.votes or None, flip_below=args.flip_below)
    sys.stdout.write(f"{target}\n")
    return 0


def _add_quantize(sub) -> None:
    p = sub.add_parser("quantize", help="an int8 version of an exported version (post-training static quantization, "
                                        "calibrated on training images; needs the [quantize] extra)")
    p.add_argument("version_dir", help="an exported version without branches (no cascade, no --flip-below), "
                                       "e.g. models_export/emotion/10")
    p.add_argument("--out", default="models_export", help="export root (default: models_export)")
    p.add_argument("--version", type=int, help="version number (default: next free)")
    p.add_argument("--samples", type=int,
                   help="training images to calibrate on (default: quantize.DEFAULT_CALIBRATION_IMAGES, 1024)")
    p.add_argument("--seed", type=int, default=0, help="which training images those are (default: 0)")
    p.add_argument("--no-evaluate", action="store_true", help="skip writing validation metrics into the model card")
    p.add_argument("--eval-dir", default="runs/eval",
                   help="where the evaluation's JSON and confusion matrix go (default: runs/eval/<model>-<version>)")
    _add_votes(p, default="the run's own, if it trained on FER+ votes")


def _cmd_quantize(args) -> int:
    from emotion_ai_training.quantize import quantize_version

    try:
        samples = {} if args.samples is None else {"samples": args.samples}
        target = quantize_version(Path(args.version_dir), args.out, version=args.version, seed=args.seed,
                                  evaluate=not args.no_evaluate, eval_dir=args.eval_dir, votes=args.votes or None,
                                  **samples)
    except ImportError as exc:
        log.error("quantize needs Intel Neural Compressor: pip install './training[quantize]' (%s)", exc)
        return 2
    sys.stdout.write(f"{target}\n")
    return 0


def _add_interpolate(sub) -> None:
    p = sub.add_parser("interpolate", help="an emotion run fine-tuned with --init-from, interpolated with its starting "
                                           "weights (WiSE-FT): one checkpoint and both label metrics per alpha")
    p.add_argument("run_dir", metavar="RUN_DIR", help="an emotion run trained with --init-from")
    p.add_argument("--alpha", type=float, nargs="+", required=True, metavar="A",
                   help="weights start + A * (checkpoint - start), each in [0, 1]; writes interpolated_<A>.keras")
    p.add_argument("--checkpoint", default="best.keras", help="the run's checkpoint at A = 1 (default: best.keras)")
    p.add_argument("--votes", metavar="CSV", help="FER+ vote file for the agreement metric (default: the run's own)")


def _cmd_interpolate(args) -> int:
    from emotion_ai_training.interpolate import interpolate_run

    report = interpolate_run(Path(args.run_dir), args.alpha, args.checkpoint, args.votes)
    rows = ["| alpha | checkpoint | FER-2013 acc. (mirror) | FER+ agreement (mirror) |", "|---:|---|---:|---:|"]
    for r in report["alphas"]:
        one, mirror = r["one_view"], r["mirror"]
        rows.append(f"| {r['alpha']:.2f} | {r['checkpoint']} | {one['fer2013_accuracy']:.4f} "
                    f"({mirror['fer2013_accuracy']:.4f}) | {one['ferplus_agreement'] or float('nan'):.4f} "
                    f"({mirror['ferplus_agreement'] or float('nan'):.4f}) |")
    sys.stdout.write("\n".join(rows) + "\n")
    return 0


def _add_model_info(sub) -> None:
    sub.add_parser("model-info", help="architecture table: parameters and FLOPs per image of both ResNets")


def _cmd_model_info(args) -> int:
    from emotion_ai.spec import EMOTION_LABELS

    from emotion_ai_training.models import ARCHITECTURES, build_emotion_model, build_keypoints_model, count_flops

    rows = ["| architecture | stem | stage widths | blocks | parameters | FLOPs / image |",
            "|---|---|---|---|---|---|"]
    for name, (task, cfg) in ARCHITECTURES.items():
        model = build_emotion_model(len(EMOTION_LABELS), cfg) if task == "emotion" else build_keypoints_model(cfg)
        rows.append(f"| {name} | {cfg.stem_width}, stride {cfg.stem_stride} | {cfg.stage_widths} | "
                    f"{cfg.stage_blocks} | {model.count_params() / 1e6:.2f} M | {count_flops(model) / 1e6:.0f} M |")
    sys.stdout.write("\n".join(rows) + "\n")
    return 0


def _add_calibrate(sub) -> None:
    p = sub.add_parser("calibrate-crop", help="measure spec.CROPS[detector] against a face detector")
    p.add_argument("task", choices=TASKS)
    p.add_argument("--detector", default=DEFAULT_DETECTOR, choices=sorted(DETECTORS),
                   help=f"face detector (default: {DEFAULT_DETECTOR})")
    p.add_argument("--data", help=f"dataset (default: the copy in {DATA_HELP})")
    p.add_argument("--samples", type=int, default=2000, help="frames to try (default: 2000)")
    p.add_argument("--cache-dir", default="cache")


def _cmd_calibrate(args) -> int:
    import numpy as np
    from emotion_ai.detect import make_detector

    from emotion_ai_training.calibrate import calibrate
    from emotion_ai_training.data import load_task

    data = args.data or str(default_data(args.task))
    images = load_task(args.task, data, cache_dir=args.cache_dir).images
    idx = np.random.default_rng(0).choice(len(images), min(args.samples, len(images)), replace=False)
    result = calibrate(images[idx], detector=make_detector(args.detector))
    g = result.geometry
    sys.stdout.write(f"{args.task}: CropGeometry(scale={g.scale}, shift_x={g.shift_x}, shift_y={g.shift_y})  "
                     f"# one face found in {result.detected}/{result.tried} frames, "
                     f"scale IQR {result.scale_iqr}\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emotion-ai-train", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_describe(sub)
    _add_evaluate(sub)
    _add_export(sub)
    _add_reexport(sub)
    _add_quantize(sub)
    _add_interpolate(sub)
    _add_model_info(sub)
    _add_calibrate(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    use_onednn()  # the int8 models evaluate with oneDNN's kernels (before a command imports TensorFlow)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    handlers = {"train": _cmd_train, "describe": _cmd_describe, "evaluate": _cmd_evaluate,
                "export": _cmd_export, "reexport": _cmd_reexport, "quantize": _cmd_quantize,
                "interpolate": _cmd_interpolate,
                "model-info": _cmd_model_info, "calibrate-crop": _cmd_calibrate}
    try:
        return handlers[args.command](args)
    except (ValueError, FileExistsError, FileNotFoundError) as exc:
        log.error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
