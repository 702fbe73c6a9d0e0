#!/usr/bin/env bash
# The main job on a fresh machine: set up .venv, start the embedded server with the bundled
# models_export/ (same serving/models.config as the Docker setup), run the client on a real photo
# shipped by scikit-image (the astronaut), print the combined prediction as JSON, write the
# annotated image to out/, and stop the server.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
GRPC_PORT=${GRPC_PORT:-8500}
REST_PORT=${REST_PORT:-8501}
mkdir -p out
.venv/bin/python - <<'PY'
import cv2
from skimage import data
cv2.imwrite("out/astronaut.png", cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
PY
echo "demo: starting emotion-ai-serve on 127.0.0.1 (gRPC $GRPC_PORT, REST $REST_PORT); log in out/server.log" >&2
.venv/bin/emotion-ai-serve --model_config_file=serving/models.config --models_root=models_export \
  --monitoring_config_file=serving/monitoring.config \
  --port="$GRPC_PORT" --rest_api_port="$REST_PORT" --enable_model_warmup=true >out/server.log 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null || true' EXIT
for _ in $(seq 1 240); do
  if .venv/bin/emotion-ai status --grpc-port "$GRPC_PORT" --timeout 2 >/dev/null 2>&1; then break; fi
  if ! kill -0 "$server" 2>/dev/null; then echo "demo: server exited; see out/server.log" >&2; tail -20 out/server.log >&2; exit 1; fi
  sleep 0.5
done
.venv/bin/emotion-ai status --grpc-port "$GRPC_PORT" >&2
rm -rf out/annotated  # --annotate never overwrites: start the demo's output afresh
.venv/bin/emotion-ai predict out/astronaut.png --json --annotate out/annotated --grpc-port "$GRPC_PORT"
echo "demo: annotated image written to out/annotated/astronaut.png" >&2
