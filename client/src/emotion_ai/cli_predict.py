"""`emotion-ai predict`: images and folders of images, staged ahead of their model requests."""

from __future__ import annotations

import argparse
import json
import sys
from collections import deque
from collections.abc import Generator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, closing
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from tqdm import tqdm

from . import cli_support
from .cli_parser import EXIT_ERROR, EXIT_OK, EXIT_SOME_FAILED
from .cli_support import err, out
from .client import EmotionClient
from .errors import EmotionAIError, InvalidImageError, ModelNotFoundError, RequestTimeoutError, ServerUnavailableError
from .merge import StagedImage
from .outputs import ERROR_KEY, CsvSink, annotated_path
from .result import Prediction

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".gif", ".tif", ".tiff", ".webp"}
    | {".pgm", ".ppm", ".pbm", ".pnm", ".jp2", ".exr", ".hdr"}
)
#: `emotion-ai predict`: images staged (decoded, faces detected and cropped) ahead of the ones whose model
#: requests are in flight, by this many worker threads (cv2 and gRPC release the GIL, so the cores overlap).
PIPELINE_DEPTH = 8
STAGE_WORKERS = 2


def expand_inputs(inputs: list[str], recursive: bool = False) -> tuple[list[tuple[Path, Path]], bool]:
    """(file, name relative to the folder it was found in) to process, folders expanded to their sorted
    image files (and those of their subfolders with `recursive`); was a folder given?"""
    files: list[tuple[Path, Path]] = []
    had_dir = False
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            had_dir = True
            found = p.rglob("*") if recursive else p.iterdir()
            files.extend(
                (f, f.relative_to(p))
                for f in sorted(found)
                if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
            )
        else:
            files.append((p, Path(p.name)))
    return files, had_dir


def _summary(pred: Prediction) -> str:
    if not pred.faces:
        return f"{pred.source}: no face"
    parts = [
        f"{f.emotion} {f.scores.get(f.emotion, 0.0):.2f} at {[round(v) for v in f.box]}"
        for f in pred.faces
    ]
    return f"{pred.source}: {len(pred.faces)} face(s): " + "; ".join(parts)


def stage_ahead(client: EmotionClient, paths: Iterable[Path], depth: int = PIPELINE_DEPTH,
                workers: int = STAGE_WORKERS) -> Generator[Future[StagedImage], None, None]:
    """`client.stage(path)` for each path, in order, run ahead in worker threads: at most `depth` images
    are staged or waiting while the caller sends the current one's model requests (`predict_staged`).

    Args:
        client: stages the images (decode, detect, crop; thread-safe).
        paths: the images, in output order.
        depth: most images in flight (submitted and not yet taken by the caller).
        workers: threads that stage them.

    Yields:
        One future per path, in order; its `result()` raises what `stage` raised (e.g. InvalidImageError
        for an unreadable file), so one bad file costs only its own result.
    """
    pending: deque[Future[StagedImage]] = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="emotion-ai-stage") as pool:
        try:
            for path in paths:
                pending.append(pool.submit(client.stage, path))
                if len(pending) >= depth:
                    yield pending.popleft()
            while pending:
                yield pending.popleft()
        except GeneratorExit:  # the caller stopped early (an error, or it closed the generator): drop the rest
            pool.shutdown(wait=True, cancel_futures=True)
            raise


@dataclass
class PredictOutputs:
    """Where `emotion-ai predict` reports each image: stdout (a JSON object or a summary line), the CSV rows and
    the annotated copy; an image that failed is an error record in the JSON and the CSV, and a line on stderr.

    Attributes:
        json: JSON objects on stdout (else a summary line per image).
        csv: the CSV rows, if asked for.
        out_dir: the folder of the annotated copies, if asked for.
    """

    json: bool = False
    csv: CsvSink | None = None
    out_dir: Path | None = None

    def add(self, pred: Prediction, relative: Path) -> None:
        """Report an image's prediction.

        Args:
            pred: what the client found.
            relative: the image's path relative to the folder it was found in (kept under `out_dir`).
        """
        out(pred.to_json() if self.json else _summary(pred))
        if self.csv is not None:
            for row in pred.to_rows():
                self.csv.add(row)
        if self.out_dir is not None:
            pred.save(annotated_path(self.out_dir, relative))

    def fail(self, path: Path, error: str, note: str) -> None:
        """Report an image without a result.

        Args:
            path: the image.
            error: why (its JSON `error` and CSV error column).
            note: the stderr line, without the program's name.
        """
        err(note)
        record = {"image": str(path), ERROR_KEY: error}
        if self.json:
            out(json.dumps(record))
        if self.csv is not None:
            self.csv.add(record)


def cmd_predict(args: argparse.Namespace) -> int:
    files, had_dir = expand_inputs(args.inputs, args.recursive)
    if not files:
        err("no image files to process")
        return EXIT_SOME_FAILED
    failed = 0
    with ExitStack() as stack:
        client = stack.enter_context(cli_support.client_from_args(args))  # usage errors first (exit 2); no request
        if not any(path.exists() for path, _ in files):  # a typo, not a server question: say so at once
            outputs = PredictOutputs(json=args.json)
            for path, _ in files:
                outputs.fail(path, f"{path}: no such file", f"skipped {path}: no such file")
            return EXIT_SOME_FAILED
        client.wait_until_available(timeout=args.timeout)  # as `connect`: before any output is created
        outputs = PredictOutputs(json=args.json)
        if args.csv:
            stream = stack.enter_context(
                open(args.csv, "w", newline="", encoding="utf-8", errors="backslashreplace")
            )
            outputs.csv = CsvSink(stream)
            stack.callback(outputs.csv.close)  # runs before the file closes, also when the run stops early
        if args.annotate:
            outputs.out_dir = Path(args.annotate)
            outputs.out_dir.mkdir(parents=True, exist_ok=True)
        bar = stack.enter_context(
            tqdm(
                files, desc="images", unit="img", file=sys.stderr, disable=None if had_dir else True
            )
        )
        staged = stack.enter_context(closing(stage_ahead(client, [path for path, _ in files])))
        entries = enumerate(zip(bar, staged, strict=True))
        while group := list(islice(entries, args.batch_images)):
            answers = _predict_group(client, [future for _, (_, future) in group])
            for (index, ((path, relative), _)), answer in zip(group, answers, strict=True):
                if isinstance(answer, Prediction):
                    outputs.add(answer, relative)
                elif isinstance(answer, InvalidImageError):
                    failed += 1
                    text = str(answer)
                    outputs.fail(path, text, f"skipped {text}" if str(path) in text else f"skipped {path}: {text}")
                elif isinstance(answer, (ModelNotFoundError, ServerUnavailableError)):
                    # Every file would fail the same way: stop, and report the ones never sent as such.
                    outputs.fail(path, str(answer), f"failed {path}")
                    return _stop_predict(outputs, [p for p, _ in files[index + 1 :]], answer)
                else:
                    failed += 1
                    hint = " (a larger --timeout gives each request more time)" if isinstance(
                        answer, RequestTimeoutError) else ""
                    outputs.fail(path, str(answer), f"failed {path}: {answer}{hint}")
    return EXIT_SOME_FAILED if failed else EXIT_OK


def _predict_group(client: EmotionClient, futures: list[Future[StagedImage]]) -> list[Prediction | EmotionAIError]:
    """Per staged image of a group, in order: its prediction, or the error that its staging (an unreadable
    file) or its own model requests raised; the readable ones share one request per model."""
    answers: list[Prediction | EmotionAIError | None] = []
    ready: list[StagedImage] = []
    for future in futures:
        try:
            ready.append(future.result())
            answers.append(None)
        except InvalidImageError as exc:
            answers.append(exc)
    predicted = iter(client.predict_staged_group(ready) if ready else [])
    return [next(predicted) if answer is None else answer for answer in answers]


def _stop_predict(outputs: PredictOutputs, rest: list[Path], exc: EmotionAIError) -> int:
    """Report the images a stopped run never processed (each on stderr, and as an error record) and why."""
    for path in rest:
        outputs.fail(path, f"not processed: {exc}", f"not processed {path}")
    err(f"error: {exc}" + (f"; {len(rest)} more file(s) not processed" if rest else ""))
    return EXIT_ERROR

