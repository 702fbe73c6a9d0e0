"""Server options and the three text-proto config files (models, batching, monitoring).

Base path resolution (the same `serving/models.config` works for TF Serving and this server):
TF Serving reads `base_path: "/models/emotion"` inside the container, where `./models_export` is
mounted at `/models`. The embedded server takes `--models_root=./models_export`; every base_path
under `--models_mount` (default `/models`) is remapped to that directory, so `/models/emotion`
becomes `./models_export/emotion`. Without `--models_root` base paths are used as written. As in
TF Serving, a relative base_path is rejected.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from emotion_ai import spec
from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    text_format,
    wrappers_pb2,
)
from google.protobuf.message import Message
from tensorflow_serving.config import model_server_config_pb2

from .errors import INVALID_ARGUMENT, ServingError

log = logging.getLogger(__name__)

DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"


@dataclass
class ServerOptions:
    """Command-line options, named after tensorflow_model_server's flags."""

    port: int = spec.GRPC_PORT
    rest_api_port: int = spec.REST_PORT
    host: str = "127.0.0.1"
    model_config_file: str | None = None
    model_name: str = "default"
    model_base_path: str | None = None
    models_root: str | None = None
    models_mount: str = "/models"
    file_system_poll_wait_seconds: float = 1.0
    model_config_file_poll_wait_seconds: float = 0.0
    rest_api_timeout_in_ms: int = 30000
    rest_api_num_threads: int = 0
    enable_batching: bool = False
    batching_parameters_file: str | None = None
    monitoring_config_file: str | None = None
    enable_model_warmup: bool = True
    allow_version_labels_for_unavailable_models: bool = False
    max_num_load_retries: int = 5
    load_retry_interval_micros: int = 60_000_000
    max_request_bytes: int = 64 * 1024 * 1024
    shutdown_grace_seconds: float = 30.0
    log_format: str = "json"


@dataclass(frozen=True)
class BatchingSettings:
    """The subset of BatchingParameters the embedded batcher honours."""

    max_batch_size: int = 32
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 100
    num_batch_threads: int = 2
    allowed_batch_sizes: tuple[int, ...] = ()


@dataclass(frozen=True)
class MonitoringSettings:
    prometheus_enabled: bool = False
    prometheus_path: str = DEFAULT_PROMETHEUS_PATH


@dataclass
class ModelEntry:
    """One `config { … }` of a ModelServerConfig with its base path resolved to a local dir."""

    name: str
    base_path: Path
    policy: str = "latest"  # latest | all | specific
    num_versions: int = 1
    specific_versions: tuple[int, ...] = ()
    labels: dict[str, int] = field(default_factory=dict)


def _build_private_protos() -> tuple[type[Message], type[Message]]:
    """BatchingParameters and MonitoringConfig are not shipped in tensorflow-serving-api's wheel,
    so their descriptors (field names as in session_bundle_config.proto / monitoring_config.proto)
    are declared here for exact text-format parsing."""
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    fdp = descriptor_pb2.FileDescriptorProto(
        name="emotion_ai_serving/serving_configs.proto",
        package="tensorflow.serving",
        dependency=["google/protobuf/wrappers.proto"],
        syntax="proto3",
    )
    f = descriptor_pb2.FieldDescriptorProto
    batching = fdp.message_type.add(name="BatchingParameters")
    wrapped = [
        ("max_batch_size", 1, ".google.protobuf.Int64Value"),
        ("batch_timeout_micros", 2, ".google.protobuf.Int64Value"),
        ("max_enqueued_batches", 3, ".google.protobuf.Int64Value"),
        ("num_batch_threads", 4, ".google.protobuf.Int64Value"),
        ("thread_pool_name", 5, ".google.protobuf.StringValue"),
        ("enable_large_batch_splitting", 9, ".google.protobuf.BoolValue"),
        ("max_execution_batch_size", 10, ".google.protobuf.Int64Value"),
    ]
    for name, number, type_name in wrapped:
        batching.field.add(
            name=name,
            number=number,
            type=f.TYPE_MESSAGE,
            type_name=type_name,
            label=f.LABEL_OPTIONAL,
        )
    batching.field.add(
        name="allowed_batch_sizes", number=6, type=f.TYPE_INT64, label=f.LABEL_REPEATED
    )
    batching.field.add(
        name="pad_variable_length_inputs", number=7, type=f.TYPE_BOOL, label=f.LABEL_OPTIONAL
    )
    prom = fdp.message_type.add(name="PrometheusConfig")
    prom.field.add(name="enable", number=1, type=f.TYPE_BOOL, label=f.LABEL_OPTIONAL)
    prom.field.add(name="path", number=2, type=f.TYPE_STRING, label=f.LABEL_OPTIONAL)
    mon = fdp.message_type.add(name="MonitoringConfig")
    mon.field.add(
        name="prometheus_config",
        number=1,
        type=f.TYPE_MESSAGE,
        type_name=".tensorflow.serving.PrometheusConfig",
        label=f.LABEL_OPTIONAL,
    )
    pool.Add(fdp)
    get = message_factory.GetMessageClass
    return (
        get(pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters")),
        get(pool.FindMessageTypeByName("tensorflow.serving.MonitoringConfig")),
    )


BatchingParameters, MonitoringConfig = _build_private_protos()


def read_config_text(path: str | Path, what: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise ServingError(INVALID_ARGUMENT, f"Failed to read {what} file {path}: {exc}") from exc


def _parse_text(path: str | Path, message: Message, what: str) -> Message:
    return _parse(read_config_text(path, what), message)


def _parse(text: str, message: Message) -> Message:
    try:
        return text_format.Parse(text, message)
    except text_format.ParseError as exc:
        raise ServingError(
            INVALID_ARGUMENT,
            f"Error parsing text-format tensorflow.serving.{type(message).__name__}: {exc}",
        ) from exc


def read_model_server_config(path: str | Path) -> model_server_config_pb2.ModelServerConfig:
    return _parse_text(path, model_server_config_pb2.ModelServerConfig(), "ModelServerConfig")


def parse_model_server_config(text: str) -> model_server_config_pb2.ModelServerConfig:
    return _parse(text, model_server_config_pb2.ModelServerConfig())


def read_batching_settings(path: str | Path | None) -> BatchingSettings:
    if path is None:
        return BatchingSettings()
    msg = _parse_text(path, BatchingParameters(), "BatchingParameters")
    default = BatchingSettings()

    def pick(name: str, fallback: int) -> int:
        return int(getattr(msg, name).value) if msg.HasField(name) else fallback

    settings = BatchingSettings(
        max_batch_size=pick("max_batch_size", default.max_batch_size),
        batch_timeout_micros=pick("batch_timeout_micros", default.batch_timeout_micros),
        max_enqueued_batches=pick("max_enqueued_batches", default.max_enqueued_batches),
        num_batch_threads=pick("num_batch_threads", default.num_batch_threads),
        allowed_batch_sizes=tuple(int(s) for s in msg.allowed_batch_sizes),
    )
    sizes = settings.allowed_batch_sizes
    if sizes and (list(sizes) != sorted(sizes) or sizes[-1] != settings.max_batch_size):
        raise ServingError(
            INVALID_ARGUMENT,
            "allowed_batch_sizes entries must be monotonically increasing and the last entry "
            "must equal max_batch_size",
        )
    return settings


def read_monitoring_settings(path: str | Path | None) -> MonitoringSettings:
    if path is None:
        return MonitoringSettings()
    msg = _parse_text(path, MonitoringConfig(), "MonitoringConfig")
    prom = msg.prometheus_config
    return MonitoringSettings(
        prometheus_enabled=prom.enable, prometheus_path=prom.path or DEFAULT_PROMETHEUS_PATH
    )


def resolve_base_path(base_path: str, models_root: str | None, models_mount: str) -> Path:
    """Map a config base_path to a local directory (see the module docstring)."""
    if models_root is not None:
        mount = PurePosixPath(models_mount)
        posix = PurePosixPath(base_path)
        if posix == mount or mount in posix.parents:
            return Path(models_root).resolve() / posix.relative_to(mount)
    return Path(base_path)


def model_entries(
    config: model_server_config_pb2.ModelServerConfig, options: ServerOptions
) -> list[ModelEntry]:
    """Validate a ModelServerConfig like ServerCore does and resolve its base paths."""
    if config.WhichOneof("config") == "custom_model_config":
        raise ServingError(
            INVALID_ARGUMENT,
            "ServerModelConfig type not supported by HandleReloadConfigRequest. Only "
            "ModelConfigList is currently supported",
        )
    entries: list[ModelEntry] = []
    seen: set[str] = set()
    for cfg in config.model_config_list.config:
        if cfg.name in seen:
            raise ServingError(
                INVALID_ARGUMENT, f"Illegal to list model {cfg.name} multiple times in config list"
            )
        seen.add(cfg.name)
        if not cfg.model_platform:
            raise ServingError(
                INVALID_ARGUMENT,
                "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
                f"ModelServerConfig::model_platform, model name is {cfg.name}",
            )
        if cfg.model_platform != "tensorflow":
            raise ServingError(
                INVALID_ARGUMENT, f"Unsupported model_platform {cfg.model_platform!r}"
            )
        if not PurePosixPath(cfg.base_path).is_absolute():
            raise ServingError(
                INVALID_ARGUMENT,
                f"Expected model {cfg.name} to have an absolute path or URI; "
                f"got base_path()={cfg.base_path}",
            )
        policy = cfg.model_version_policy
        choice = policy.WhichOneof("policy_choice") or "latest"
        entries.append(
            ModelEntry(
                name=cfg.name,
                base_path=resolve_base_path(
                    cfg.base_path, options.models_root, options.models_mount
                ),
                policy=choice,
                num_versions=max(1, policy.latest.num_versions) if choice == "latest" else 1,
                specific_versions=tuple(policy.specific.versions) if choice == "specific" else (),
                labels=dict(cfg.version_labels),
            )
        )
    return entries


def single_model_config(name: str, base_path: str) -> model_server_config_pb2.ModelServerConfig:
    """The config `--model_name` + `--model_base_path` stand for."""
    config = model_server_config_pb2.ModelServerConfig()
    entry = config.model_config_list.config.add()
    entry.name = name
    entry.base_path = str(Path(base_path).resolve())
    entry.model_platform = "tensorflow"
    return config
