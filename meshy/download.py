"""Downloading and unpacking the Istio release: sha256-verified, cached, atomic.

A download goes to NAME.part and is renamed only once its checksum matched,
so an interrupted or corrupt transfer never leaves a usable-looking cache.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import requests

from meshy import ROOT
from meshy.console import Console
from meshy.errors import MeshyError
from meshy.versions import Pair

CACHE = ROOT / ".cache"
RELEASES = "https://github.com/istio/istio/releases/download"
CHUNK = 1 << 16


def cache_dir() -> Path:
    """Where releases are downloaded and unpacked (MESHY_CACHE, default .cache/)."""
    return Path(os.environ.get("MESHY_CACHE") or CACHE)


class DownloadError(MeshyError, RuntimeError):
    """A download failed; nothing was left in the cache."""


@dataclass(frozen=True)
class Artifact:
    url: str
    sha256: str | None  # None: verify against checksum_url
    checksum_url: str
    name: str


def istio_artifact(pair: Pair, system: str | None = None, machine: str | None = None) -> Artifact:
    system = (system or platform.system()).lower()
    machine = (machine or platform.machine()).lower()
    os_name = {"linux": "linux", "darwin": "osx"}.get(system)
    if os_name is None:
        raise DownloadError(f"Istio publishes no archive for {system}; use Linux or macOS.")
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine)
    platform_name = archive_platform(os_name, arch, pair.istio_release)
    name = f"istio-{pair.istio_release}-{platform_name}.tar.gz"
    url = f"{RELEASES}/{pair.istio_release}/{name}"
    return Artifact(url, pair.istio_sha256.get(platform_name), url + ".sha256", name)


def archive_platform(os_name: str, arch: str, release: str) -> str:
    """The platform part of the archive name, as istio/istio release/downloadIstioCandidate.sh builds it.

    Linux archives always name the architecture; macOS ones are plain `osx`
    except `osx-arm64`, published from Istio 1.10 on.
    """
    if os_name == "linux":
        return f"linux-{arch}"
    major, minor = (int(part) for part in release.split(".")[:2])
    return "osx-arm64" if arch == "arm64" and (major, minor) >= (1, 10) else "osx"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def published_checksum(url: str, session: requests.Session) -> str:
    text = _get(url, session).text.strip()
    value = text.split()[0] if text else ""
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value.lower()):
        raise DownloadError(f"{url} holds no sha256 checksum; pin one as istio_sha256 in manifests/matrix.yaml.")
    return value.lower()


def download(artifact: Artifact, cache: Path, console: Console, session: requests.Session | None = None) -> Path:
    """The verified archive in the cache, downloading it if needed."""
    session = session or requests.Session()
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / artifact.name
    expected = artifact.sha256 or published_checksum(artifact.checksum_url, session)
    if target.exists() and sha256_of(target) == expected:
        console.info(f"   {artifact.name} already downloaded and verified ({target})")
        return target
    partial = target.with_name(target.name + ".part")
    try:
        with console.step(f"Downloading {artifact.name}"):
            received, digest = _stream(artifact.url, partial, session, console)
            if digest != expected:
                raise DownloadError(
                    f"checksum mismatch for {artifact.name}: expected {expected}, got {digest}; "
                    "the download was discarded - retry, and if it persists check istio_sha256 in manifests/matrix.yaml."
                )
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    source = "pinned" if artifact.sha256 else "published"
    console.info(f"   verified {received} bytes against the {source} sha256 {expected[:16]}...")
    return target


def _get(url: str, session: requests.Session, stream: bool = False) -> requests.Response:
    try:
        response = session.get(url, stream=stream, timeout=(10, 60))
    except requests.ConnectionError as error:
        raise DownloadError(
            f"cannot reach {url} ({type(error).__name__}); check the network connection or proxy."
        ) from None
    except requests.Timeout:
        raise DownloadError(f"{url} did not answer in time; check the network connection and retry.") from None
    if response.status_code != 200:
        raise DownloadError(f"{url} answered {response.status_code}; check that the release exists and retry.")
    return response


def _stream(url: str, partial: Path, session: requests.Session, console: Console) -> tuple[int, str]:
    response = _get(url, session, stream=True)
    total = int(response.headers.get("content-length") or 0)
    digest = hashlib.sha256()
    received = 0
    try:
        with partial.open("wb") as handle:
            for chunk in response.iter_content(CHUNK):
                handle.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                console.progress("downloading (KiB)", received // 1024, max(total, received) // 1024)
    except (requests.RequestException, OSError) as error:
        raise DownloadError(
            f"the transfer of {url} was cut off ({type(error).__name__}); retry the download."
        ) from None
    if total and received != total:
        raise DownloadError(f"the transfer of {url} was cut off after {received} of {total} bytes; retry the download.")
    return received, digest.hexdigest()


def extract(archive: Path, destination: Path) -> Path:
    """Unpack into destination/<top folder> via a temporary folder renamed into place."""
    destination.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        tops = {member.name.split("/")[0] for member in tar.getmembers()}
        if len(tops) != 1:
            raise DownloadError(
                f"{archive.name} does not hold one top folder; delete it from {archive.parent} and retry."
            )
        top = destination / tops.pop()
        if top.exists():
            return top
        scratch = Path(tempfile.mkdtemp(dir=destination, prefix=".extract-"))
        try:
            tar.extractall(scratch, filter="data")
            (scratch / top.name).replace(top)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return top
