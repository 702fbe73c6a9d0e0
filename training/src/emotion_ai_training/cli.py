"""`emotion-ai-train`: describe data, train, evaluate and export the two models."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

log = logging.getLogger("emotion_ai_training")

DEFAULT_DATA = {"emotion": "../shared/data/fer2013.csv.gz", "keypoints": "../shared/data/facial_keypoints.csv.gz"}


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a model (checkpoint every epoch; --resume continues)")
    p.add_argument("task", choices=("emotion", "keypoints"))
    p.add_argument("--data", help="dataset file or folder (default: the copy in ../shared/data)")
    p.add_argument("--name", help="run name under --runs (default: the task name)")
    p.add_argument("--runs", default="runs", help="folder holding runs (default: runs)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (cosine schedule, linear warmup)")
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--patience", type=int, default=10, help="early stopping on the validation metric")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", default="mixed_bfloat16", choices=("mixed_bfloat16", "float32"))
    p.add_argument("--classes", type=int, default=7, choices=(7, 5), help="emotion: 7 classes or the 5-class subset")
    p.add_argument("--tiny", action="store_true", help="seconds-long smoke configuration")
    p.add_argument("--limit", type=int, default=0, help="use at most N training rows")
    p.add_argument("--cache-dir", default="cache", help="where parsed datasets are cached as .npz")
    p.add_argument("--resume", action="store_true", help="continue runs/<name> from its last checkpoint")
    p.add_argument("--preview", metavar="PNG", help="write a grid of augmented samples and exit")


def _cmd_train(args) -> int:
    from emotion_ai_training.data import file_sha256
    from emotion_ai_training.train import TrainConfig, train

    data = args.data or DEFAULT_DATA[args.task]
    if args.preview:
        return _preview(args.task, data, Path(args.preview), args.cache_dir, args.seed)
    cfg = TrainConfig(
        task=args.task, data=data, run_dir=str(Path(args.runs) / (args.name or args.task)), epochs=args.epochs,
        batch_size=args.batch_size, learning_rate=args.lr, weight_decay=args.weight_decay, patience=args.patience,
        seed=args.seed, precision=args.precision, classes=args.classes, tiny=args.tiny, limit=args.limit,
        cache_dir=args.cache_dir, data_sha256=file_sha256(Path(data)) if Path(data).exists() else "",
    )
    run_dir = train(cfg, resume=args.resume)
    log.info("run written to %s", run_dir)
    return 0


def _preview(task: str, data: str, out: Path, cache_dir: str, seed: int) -> int:
    from emotion_ai_training.augment import EMOTION_AUGMENT, KEYPOINTS_AUGMENT, Augmenter, write_preview
    from emotion_ai_training.data import load_emotion, load_keypoints

    rng = __import__("numpy").random.default_rng(seed)
    if task == "keypoints":
        d = load_keypoints(data, cache_dir=cache_dir)
        idx = rng.choice(len(d.images), 6, replace=False)
        write_preview(out, d.images[idx], d.points[idx], Augmenter(KEYPOINTS_AUGMENT, seed))
    else:
        d = load_emotion(data, cache_dir=cache_dir)
        idx = rng.choice(len(d.images), 6, replace=False)
        write_preview(out, d.images[idx], None, Augmenter(EMOTION_AUGMENT, seed))
    log.info("wrote %s", out)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="emotion-ai-train", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    handlers = {"train": _cmd_train}
    try:
        return handlers[args.command](args)
    except (ValueError, FileExistsError, FileNotFoundError) as exc:
        log.error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
