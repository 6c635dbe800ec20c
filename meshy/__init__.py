"""kube-meshy: the kind + Istio walkthrough as tasks, a local Envoy backend and judged scenarios."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
