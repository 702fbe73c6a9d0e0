"""Which versions of which models exist, their states (as in GetModelStatus) and lookups."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from .config import ModelEntry
from .errors import FAILED_PRECONDITION, INVALID_ARGUMENT, OK, ServingError, not_found
from .servable import Servable

# ModelVersionStatus.State names.
START, LOADING, AVAILABLE, UNLOADING, END = "START", "LOADING", "AVAILABLE", "UNLOADING", "END"


@dataclass
class VersionState:
    """What the monitor knows about one version (END entries are kept, as TF Serving does)."""

    version: int
    state: str = START
    error_code: str = OK
    error_message: str = ""
    servable: Servable | None = None
    fingerprint: tuple = ()
    attempts: int = 0
    last_attempt: float = 0.0


@dataclass
class ModelRecord:
    entry: ModelEntry
    versions: dict[int, VersionState] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)

    def available(self) -> list[int]:
        return sorted(v for v, s in self.versions.items() if s.state == AVAILABLE)


@dataclass(frozen=True)
class StatusEntry:
    version: int
    state: str
    error_code: str
    error_message: str


class ModelRegistry:
    """Thread-safe registry shared by the REST/gRPC front ends and the version watcher."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._models: dict[str, ModelRecord] = {}

    # ----------------------------------------------------------------------------- queries
    def record(self, name: str) -> ModelRecord | None:
        with self._lock:
            return self._models.get(name)

    def servable(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        """ServerCore::GetServableHandle: latest AVAILABLE, a specific version, or a label."""
        with self._lock:
            record = self._models.get(name)
            if label is not None:
                if record is None or label not in record.labels:
                    raise ServingError(
                        INVALID_ARGUMENT, f"Unrecognized servable version label: {label}"
                    )
                version = record.labels[label]
            state: VersionState | None
            if version is None:
                available = record.available() if record else []
                if record is None or not available:
                    raise not_found(f"Servable not found for request: Latest({name})")
                state = record.versions[available[-1]]
            else:
                state = record.versions.get(version) if record else None
                if state is None or state.state != AVAILABLE:
                    raise not_found(f"Servable not found for request: Specific({name}, {version})")
            assert state.servable is not None
            return state.servable

    def status(self, name: str, version: int | None = None) -> list[StatusEntry]:
        """GetModelStatusImpl: versions in descending order, END entries included."""
        with self._lock:
            record = self._models.get(name)
            if record is None or not record.versions:
                raise not_found(f"Could not find any versions of model {name}")
            states = sorted(record.versions.values(), key=lambda s: s.version, reverse=True)
            if version is not None:
                states = [s for s in states if s.version == version]
                if not states:
                    raise not_found(f"Could not find version {version} of model {name}")
            return [StatusEntry(s.version, s.state, s.error_code, s.error_message) for s in states]

    # --------------------------------------------------------------------------- updates
    def set_models(self, entries: list[ModelEntry], allow_unavailable_labels: bool) -> list[str]:
        """Install a new model list (labels checked first, as ServerCore::ReloadConfig does).
        Returns the names of models that are no longer configured (the caller unloads them)."""
        with self._lock:
            for entry in entries:
                record = self._models.get(entry.name)
                for label, version in entry.labels.items():
                    loaded = record is not None and version in record.available()
                    moving = record is not None and record.labels.get(label) not in (None, version)
                    if not loaded and (moving or not allow_unavailable_labels):
                        raise ServingError(
                            FAILED_PRECONDITION,
                            f"Request to assign label to version {version} of model "
                            f"{entry.name}, which is not currently available for inference",
                        )
            removed = [name for name in self._models if name not in {e.name for e in entries}]
            for entry in entries:
                record = self._models.setdefault(entry.name, ModelRecord(entry))
                record.entry = entry
                record.labels = dict(entry.labels)
            return removed

    def version_state(self, name: str, version: int) -> VersionState:
        with self._lock:
            record = self._models[name]
            return record.versions.setdefault(version, VersionState(version))

    def update(self, name: str, version: int, **changes: object) -> None:
        with self._lock:
            record = self._models.get(name)
            if record is None:
                return
            state = record.versions.setdefault(version, VersionState(version))
            for key, value in changes.items():
                setattr(state, key, value)

    def base_path(self, name: str) -> Path:
        with self._lock:
            return self._models[name].entry.base_path
