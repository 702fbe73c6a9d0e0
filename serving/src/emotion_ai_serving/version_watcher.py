"""File-system polling of each model's base path: version policy, availability-preserving
load-before-unload, retries of failed or half-written versions, and config (re)loading."""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from emotion_ai.versions import version_dirs
from tensorflow_serving.config import model_server_config_pb2

from .config import ModelEntry, ServerOptions, model_entries, parse_model_server_config, read_config_text
from .errors import UNKNOWN, ServingError
from .model_registry import AVAILABLE, END, LOADING, UNLOADING, ModelRegistry
from .servable import Servable

log = logging.getLogger(__name__)


def is_complete(version_dir: Path) -> bool:
    """A version dir that looks fully written: saved_model.pb(txt) and, when it has variables,
    the index plus every data shard the shard names announce."""
    if not any((version_dir / f).is_file() for f in ("saved_model.pb", "saved_model.pbtxt")):
        return False
    variables = version_dir / "variables"
    if not variables.is_dir():
        return True
    if not (variables / "variables.index").is_file():
        return False
    shards = [p.name for p in variables.glob("variables.data-*-of-*")]
    if not shards:
        return False
    total = int(shards[0].rsplit("-of-", 1)[1])
    return len(shards) == total


def fingerprint(version_dir: Path) -> tuple:
    entries = []
    for path in sorted(version_dir.rglob("*")):
        try:
            stat = path.stat()
        except OSError:
            continue
        entries.append((str(path.relative_to(version_dir)), stat.st_size, stat.st_mtime_ns))
    return tuple(entries)


def scan_versions(base_path: Path) -> tuple[dict[int, Path], list[int]]:
    """Version dirs of base_path (TF Serving's naming rule, `emotion_ai.versions`): (complete versions,
    incomplete ones)."""
    found: dict[int, Path] = {}
    for version, child in version_dirs(base_path):
        if version in found:
            log.warning(
                "duplicate version directories; the last one wins",
                extra={"version": version, "path": str(child)},
            )
        found[version] = child
    complete = {v: p for v, p in found.items() if is_complete(p)}
    return complete, sorted(set(found) - set(complete))


def aspired_versions(entry: ModelEntry, on_disk: list[int]) -> set[int]:
    if entry.policy == "all":
        return set(on_disk)
    if entry.policy == "specific":
        missing = set(entry.specific_versions) - set(on_disk)
        if missing:
            log.warning(
                "specific versions not found on disk",
                extra={"model": entry.name, "versions": sorted(missing)},
            )
        return set(entry.specific_versions) & set(on_disk)
    return set(sorted(on_disk)[-entry.num_versions :])


def settle_heap() -> None:
    """Collect garbage, then freeze every object left (gc.freeze) out of the cyclic collector's reach.

    A loaded model leaves hundreds of thousands of Python objects that live as long as it does; a request
    body parsed from JSON allocates tens of thousands more, and every few requests that triggers a full
    collection that walks them all: 250–330 ms measured on an 8-face REST request with both models loaded,
    against 16–50 ms once frozen. Run after each load and unload (rare events), so an unloaded version's
    objects are collected before the rest is frozen again.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class VersionWatcher:
    """Keeps the registry in line with the config and the directories on disk."""

    def __init__(
        self,
        registry: ModelRegistry,
        options: ServerOptions,
    ) -> None:
        self.registry = registry
        self.options = options
        self._configured: list[str] = []
        self._sync_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._missing_logged: set[str] = set()
        self._config_text: str | None = None

    # ----------------------------------------------------------------------- config
    def apply_config(self, config: model_server_config_pb2.ModelServerConfig) -> None:
        """ServerCore::ReloadConfig: labels validated first, removed models unloaded, new
        models loaded before returning."""
        entries = model_entries(config, self.options)
        with self._sync_lock:
            removed = self.registry.set_models(
                entries, self.options.allow_version_labels_for_unavailable_models
            )
            self._configured = [e.name for e in entries]
            for name in removed:
                record = self.registry.record(name)
                for version in record.available() if record else []:
                    self._unload(name, version)
            for name in self._configured:
                self._sync_model(name)
        log.info("model config applied", extra={"models": self._configured, "removed": removed})

    def initial_load(self, stop: threading.Event) -> None:
        """Block until every configured model has an AVAILABLE version (TF Serving waits
        forever for a base path without versions) or raise if a model failed to load."""
        announced: set[str] = set()
        while not stop.is_set():
            failed, waiting = {}, []
            for name in self._configured:
                record = self.registry.record(name)
                if record is None or record.available():
                    continue
                errors = [s.error_message for s in record.versions.values() if s.error_code != "OK"]
                if errors:
                    failed[name] = errors[-1]
                else:
                    waiting.append(name)
            if failed:
                raise ServingError(
                    UNKNOWN, f"{len(failed)} model(s) did not become available: {failed}"
                )
            if not waiting:
                return
            for name in set(waiting) - announced:
                log.warning(
                    f"No versions of servable {name} found under base path "
                    f"{self.registry.base_path(name)}. Did you forget to name your leaf directory "
                    "as a number (eg. '/1/')?"
                )
            announced |= set(waiting)
            stop.wait(max(self.options.file_system_poll_wait_seconds, 0.5))
            self.sync_all()

    # ----------------------------------------------------------------------- polling
    def sync_all(self) -> None:
        with self._sync_lock:
            for name in list(self._configured):
                try:
                    self._sync_model(name)
                except Exception:  # a broken model dir must not stop polling the others
                    log.exception("version poll failed", extra={"model": name})

    def start(self, config_file: Path | None) -> None:
        """Start the version poller, and the config-file poller when `config_file` is given."""
        poll = self.options.file_system_poll_wait_seconds
        if poll > 0:
            self._spawn("version-poller", poll, self.sync_all)
        config_poll = self.options.model_config_file_poll_wait_seconds
        if config_file is not None and config_poll > 0:
            self._config_text = read_config_text(config_file, "ModelServerConfig")

            def reload_if_changed() -> None:
                try:
                    text = read_config_text(config_file, "ModelServerConfig")
                    if text == self._config_text:
                        return
                    self.apply_config(parse_model_server_config(text))
                    self._config_text = text
                except ServingError as exc:
                    log.error(f"Failed to read ModelServerConfig file: {exc.message}")

            self._spawn("config-poller", config_poll, reload_if_changed)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)

    def _spawn(self, name: str, every: float, action: Callable[[], None]) -> None:
        def loop() -> None:
            while not self._stop.wait(every):
                action()

        thread = threading.Thread(target=loop, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    # -------------------------------------------------------------------- one model
    def _sync_model(self, name: str) -> None:
        record = self.registry.record(name)
        if record is None:
            return
        entry = record.entry
        if not entry.base_path.is_dir():
            if name not in self._missing_logged:
                log.error(f"Could not find base path {entry.base_path} for servable {name}")
                self._missing_logged.add(name)
            return
        self._missing_logged.discard(name)
        complete, incomplete = scan_versions(entry.base_path)
        for version in incomplete:
            log.debug("ignoring incomplete version dir", extra={"model": name, "version": version})
        aspired = aspired_versions(entry, list(complete))
        now = time.monotonic()
        for version in sorted(aspired, reverse=True):
            state = self.registry.version_state(name, version)
            if state.state == AVAILABLE:
                continue
            current = fingerprint(complete[version])
            if state.error_code != "OK":
                if current != state.fingerprint:
                    state.attempts = 0
                elif (
                    state.attempts > self.options.max_num_load_retries
                    or now - state.last_attempt < self.options.load_retry_interval_micros / 1e6
                ):
                    continue
            self._load(name, version, complete[version], current, state.attempts + 1)
        available = record.available()
        to_unload = [v for v in available if v not in aspired]
        if complete and to_unload and not any(v in aspired for v in available):
            to_unload.remove(max(to_unload))  # availability preserving: keep the only one left
        for version in to_unload:
            self._unload(name, version)

    def _load_servable(self, name: str, version: int, path: Path) -> Servable:
        servable = Servable(name, version, path)
        if self.options.enable_model_warmup:
            started = time.monotonic()
            count = servable.warmup()
            log.info(
                "warmup done",
                extra={
                    "model": name,
                    "version": version,
                    "records": count,
                    "seconds": round(time.monotonic() - started, 3),
                },
            )
        return servable

    def _load(self, name: str, version: int, path: Path, fp: tuple, attempt: int) -> None:
        self.registry.update(
            name,
            version,
            state=LOADING,
            error_code="OK",
            error_message="",
            fingerprint=fp,
            attempts=attempt,
            last_attempt=time.monotonic(),
        )
        log.info(
            "loading servable version",
            extra={"model": name, "version": version, "path": str(path), "attempt": attempt},
        )
        try:
            servable = self._load_servable(name, version, path)
        except Exception as exc:
            code = exc.code if isinstance(exc, ServingError) else UNKNOWN
            message = (
                exc.message if isinstance(exc, ServingError) else f"{type(exc).__name__}: {exc}"
            )
            self.registry.update(
                name,
                version,
                state=END,
                error_code=code,
                error_message=message[:2000],
                servable=None,
            )
            log.error(
                "servable version failed to load",
                extra={"model": name, "version": version, "error": message[:500]},
            )
            settle_heap()
            return
        self.registry.update(name, version, state=AVAILABLE, servable=servable)
        settle_heap()
        log.info("servable version available", extra={"model": name, "version": version})

    def _unload(self, name: str, version: int) -> None:
        self.registry.update(name, version, state=UNLOADING)
        self.registry.update(
            name, version, state=END, servable=None, error_code="OK", error_message=""
        )
        settle_heap()
        log.info("servable version unloaded", extra={"model": name, "version": version})
