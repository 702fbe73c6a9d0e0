"""Assembles the embedded model server: initial load, then the gRPC and REST listeners."""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path

import grpc
from tensorflow_serving.config import model_server_config_pb2

from .config import (
    ServerOptions,
    read_batching_settings,
    read_model_server_config,
    read_monitoring_settings,
    single_model_config,
)
from .errors import INVALID_ARGUMENT, ServingError
from .grpc_api import build_grpc_server
from .metrics import Metrics
from .model_registry import ModelRegistry
from .prediction import PredictionCore
from .rest_api import RestServer, RestSettings
from .version_watcher import VersionWatcher

log = logging.getLogger(__name__)


class ModelServer:
    """`start()` blocks until the initial models are loaded, then opens the ports."""

    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        if options.batching_parameters_file and not options.enable_batching:
            raise ServingError(
                INVALID_ARGUMENT, "--batching_parameters_file is set without --enable_batching"
            )
        if options.port and options.port == options.rest_api_port:
            raise ServingError(INVALID_ARGUMENT, "--port and --rest_api_port must differ")
        self.batching = (
            read_batching_settings(options.batching_parameters_file)
            if options.enable_batching
            else None
        )
        self.monitoring = read_monitoring_settings(options.monitoring_config_file)
        self.metrics = Metrics()
        self.registry = ModelRegistry()
        self.core = PredictionCore(self.registry, self.batching)
        self.watcher = VersionWatcher(self.registry, options)
        self.stop_event = threading.Event()
        self.rest: RestServer | None = None
        self.grpc: grpc.Server | None = None

    def _read_config(self) -> model_server_config_pb2.ModelServerConfig:
        opts = self.options
        if opts.model_config_file:
            return read_model_server_config(opts.model_config_file)
        if not opts.model_base_path:
            raise ServingError(
                INVALID_ARGUMENT, "Both --model_config_file and --model_base_path are unset"
            )
        return single_model_config(opts.model_name, opts.model_base_path)

    def start(self) -> None:
        opts = self.options
        self.watcher.apply_config(self._read_config())
        self.watcher.initial_load(self.stop_event)
        if self.stop_event.is_set():
            return
        self.watcher.start(Path(opts.model_config_file) if opts.model_config_file else None)
        threads = opts.rest_api_num_threads or 4 * (os.cpu_count() or 1)
        if opts.port:
            self.grpc = build_grpc_server(
                host=opts.host,
                port=opts.port,
                core=self.core,
                metrics=self.metrics,
                watcher=self.watcher,
                max_request_bytes=opts.max_request_bytes,
                max_threads=threads,
            )
            self.grpc.start()
            log.info(f"Running gRPC ModelServer at {opts.host}:{opts.port} ...")
        if opts.rest_api_port:
            settings = RestSettings(
                timeout_s=opts.rest_api_timeout_in_ms / 1000
                if opts.rest_api_timeout_in_ms > 0
                else None,
                max_request_bytes=opts.max_request_bytes,
                monitoring=self.monitoring,
            )
            self.rest = RestServer(opts.host, opts.rest_api_port, self.core, self.metrics, settings)
            self.rest.start()
            log.info(f"Exporting HTTP/REST API at:{opts.host}:{opts.rest_api_port} ...")

    def stop(self) -> None:
        """Stop accepting, let in-flight requests finish (up to the grace period), exit."""
        grace = self.options.shutdown_grace_seconds
        log.info("shutting down", extra={"grace_seconds": grace})
        self.stop_event.set()
        self.watcher.stop()
        waiters: list[threading.Event] = []
        if self.grpc is not None:
            waiters.append(self.grpc.stop(grace))
        if self.rest is not None and not self.rest.stop(grace):
            log.warning("REST requests still running at the end of the grace period")
        for event in waiters:
            event.wait(grace)
        log.info("server stopped")

    def serve_until_signal(self) -> None:
        def on_signal(signum: int, _frame: object) -> None:
            log.info("signal received", extra={"signal": signal.Signals(signum).name})
            self.stop_event.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        self.start()
        while not self.stop_event.wait(0.5):
            pass
        self.stop()
