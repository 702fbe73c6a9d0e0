#!/usr/bin/env bash
# Without Docker, one command: the embedded model server with the bundled models_export/ and the analysis
# gateway in front of it (http://127.0.0.1:8000: the web page at /, the API at /v1/faces:analyze, /docs).
# Ctrl-C (or SIGTERM) stops both. Ports: GATEWAY_PORT (8000), GRPC_PORT (8500), REST_PORT (8501);
# GATEWAY_HOST=0.0.0.0 listens on every interface (the model server stays on loopback).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
GRPC_PORT=${GRPC_PORT:-8500}
REST_PORT=${REST_PORT:-8501}
GATEWAY_HOST=${GATEWAY_HOST:-127.0.0.1}
GATEWAY_PORT=${GATEWAY_PORT:-8000}
mkdir -p out
echo "gateway: starting emotion-ai-serve on 127.0.0.1 (gRPC $GRPC_PORT, REST $REST_PORT); log in out/server.log" >&2
.venv/bin/emotion-ai-serve --model_config_file=serving/models.config --models_root=models_export \
  --monitoring_config_file=serving/monitoring.config --host=127.0.0.1 \
  --port="$GRPC_PORT" --rest_api_port="$REST_PORT" --enable_model_warmup=true >out/server.log 2>&1 &
server=$!
gateway=""
stop() {
  set +e  # stop both, whatever their exit codes
  [ -n "$gateway" ] && kill "$gateway" 2>/dev/null && wait "$gateway" 2>/dev/null
  kill "$server" 2>/dev/null; wait "$server" 2>/dev/null
  return 0
}
trap stop EXIT
trap 'exit 143' TERM INT
echo "gateway: http://$GATEWAY_HOST:$GATEWAY_PORT/ once both models are AVAILABLE" >&2
# --wait: the gateway starts serving once the models are AVAILABLE (exit 2 if not within 240 s)
.venv/bin/emotion-ai gateway --host "$GATEWAY_HOST" --port "$GATEWAY_PORT" --endpoint "127.0.0.1:$GRPC_PORT" \
  --wait 240 &
gateway=$!
wait "$gateway"
