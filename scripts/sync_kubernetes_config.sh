#!/usr/bin/env bash
# Regenerate deploy/kubernetes/config/*.config from serving/*.config, their one source. kustomize reads files
# only below its folder (a symlink out of it is refused), so the ConfigMap needs copies; edit serving/ and run
# this. tests/serving/test_kubernetes.py fails when the copies differ.
set -euo pipefail
cd "$(dirname "$0")/.."
for name in models.config batching.config monitoring.config; do
  cp serving/"$name" deploy/kubernetes/config/"$name"
done
echo "sync: deploy/kubernetes/config/ regenerated from serving/" >&2
