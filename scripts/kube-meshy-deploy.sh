#!/usr/bin/env bash
# The walkthrough's one-line entry point, now a thin wrapper over `inv up`
# (options pass through: --k8s 1.19 --istio 1.8, --with-ingress).
set -euo pipefail
exec "$(dirname "${BASH_SOURCE[0]}")/run" inv up "$@"
