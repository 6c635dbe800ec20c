"""A real local mesh for tests: its own state directory, address block and ingress port."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from meshy.console import Console
from meshy.local.backend import LocalBackend, LocalConfig
from meshy.local.topology import Layout
from meshy.net import claim_address_base, free_port
from meshy.render import render
from meshy.versions import select_pair

NO_PROXY = {"http": "", "https": ""}


class Mesh:
    def __init__(self, state_dir: Path, k8s: str | None = None, istio: str | None = None) -> None:
        self.pair = select_pair(k8s, istio)
        # The claim is held as long as this object lives: no other test run takes the block.
        base, self.claim = claim_address_base()
        layout = Layout("127.0.0.1", free_port(), base, dashboard_port=free_port())
        self.backend = LocalBackend(LocalConfig(state_dir, layout), Console(quiet=True))
        self.session = requests.Session()
        self.session.trust_env = False

    def up(self) -> float:
        return self.backend.up(self.pair)

    def apply(self, text: str) -> list[str]:
        return self.backend.apply(text, "test")

    def delete(self, text: str) -> list[str]:
        return self.backend.delete(text, "test")

    def apply_template(self, name: str, **options) -> list[str]:
        from meshy.render import RenderOptions

        return self.apply(render(name, self.pair, RenderOptions(**options)))

    def delete_template(self, name: str, **options) -> list[str]:
        from meshy.render import RenderOptions

        return self.delete(render(name, self.pair, RenderOptions(**options)))

    def get(self, path: str = "/", host: str = "minimal.svc.kind.org", **kwargs) -> requests.Response:
        return self.session.get(
            self.backend.ingress_url + path, headers={"Host": host, **kwargs.pop("headers", {})}, timeout=10, **kwargs
        )

    def metrics(self) -> str:
        """The mesh's Istio metrics once every proxy's log has been read (see LocalBackend.metrics_text)."""
        return self.backend.metrics_text()

    def bounce(self, endpoint: str) -> requests.Response:
        body = f'{{"rebound":"true","endpoint":"{endpoint}"}}'
        return self.session.post(
            self.backend.ingress_url + "/bounce", data=body, headers={"Host": "minimal.svc.kind.org"}, timeout=30
        )


@contextmanager
def running(state_dir: Path) -> Iterator[Mesh]:
    """A mesh that is up for the block and down after it, whatever happens."""
    mesh = Mesh(state_dir)
    try:
        mesh.up()
        yield mesh
    finally:
        mesh.backend.down()
