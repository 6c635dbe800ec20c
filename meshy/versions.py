"""The version matrix (manifests/matrix.yaml): Kubernetes/Istio pairs and what each pins."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from meshy import ROOT
from meshy.errors import MeshyError

MATRIX = ROOT / "manifests" / "matrix.yaml"


class VersionError(MeshyError, ValueError):
    """A version pair the project cannot build."""


def _minor(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


@dataclass(frozen=True)
class Pair:
    k8s: str
    istio: str
    kind: str
    node_image: str
    istio_release: str
    istio_sha256: dict[str, str]  # platform (os-arch) -> sha256 of the release archive
    istio_k8s_range: tuple[str, str]
    istio_api: str
    ingress_api: str
    ingress_nginx: str
    registry_mirror: str

    @property
    def name(self) -> str:
        return f"{self.k8s}-istio-{self.istio}"

    @property
    def security_api(self) -> str:
        """security.istio.io's version to write: v1 where networking.istio.io/v1 is served (both from
        Istio 1.22, crd-all.gen.yaml at 1.22.8), else v1beta1 (served by every release of the matrix)."""
        return "security.istio.io/v1" if self.istio_api.endswith("/v1") else "security.istio.io/v1beta1"

    @property
    def cluster_name(self) -> str:
        return f"kube-meshy-{self.k8s.replace('.', '-')}"

    @property
    def node_version(self) -> str:
        return self.node_image.split(":")[1].split("@")[0].lstrip("v")

    def supported(self) -> bool:
        low, high = self.istio_k8s_range
        return _minor(low) <= _minor(self.k8s) <= _minor(high)


def load_matrix(path: Path = MATRIX) -> list[Pair]:
    data = yaml.safe_load(path.read_text())
    return [
        Pair(
            k8s=str(entry["k8s"]),
            istio=str(entry["istio"]),
            kind=entry["kind"],
            node_image=entry["node_image"],
            istio_release=str(entry["istio_release"]),
            istio_sha256=dict(entry.get("istio_sha256") or {}),
            istio_k8s_range=tuple(str(v) for v in entry["istio_k8s_range"]),
            istio_api=entry["apis"]["istio"],
            ingress_api=entry["apis"]["ingress"],
            ingress_nginx=entry["ingress_nginx"],
            registry_mirror=entry["registry_mirror"],
        )
        for entry in data["pairs"]
    ]


def select_pair(k8s: str | None = None, istio: str | None = None, matrix: list[Pair] | None = None) -> Pair:
    """The pair named by the options (or MESHY_K8S / MESHY_ISTIO), by default the newest."""
    matrix = matrix if matrix is not None else load_matrix()
    k8s = k8s or os.environ.get("MESHY_K8S") or None
    istio = istio or os.environ.get("MESHY_ISTIO") or None
    if not k8s and not istio:
        return matrix[-1]
    candidates = [p for p in matrix if (not k8s or p.k8s == k8s) and (not istio or p.istio == istio)]
    if candidates:
        return candidates[-1]
    known = ", ".join(f"--k8s {p.k8s} --istio {p.istio}" for p in matrix)
    for pair in matrix:
        if pair.istio == istio:
            low, high = pair.istio_k8s_range
            raise VersionError(
                f"Istio {istio} supports Kubernetes {low} to {high}, not {k8s}: "
                f"choose one of the matrix pairs ({known})."
            )
    asked = " with ".join(f"{what} {value}" for what, value in (("Kubernetes", k8s), ("Istio", istio)) if value)
    raise VersionError(f"No version pair has {asked}: choose one of the matrix pairs ({known}).")
