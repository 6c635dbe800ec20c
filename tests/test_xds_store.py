"""The xDS server's store on its own: what it keeps on disk for a restart, and when."""

from __future__ import annotations

import asyncio

import orjson

from meshy.local.xds import server
from meshy.local.xds.snapshot import CLUSTER, Resources


def snapshot(version: str) -> dict[str, Resources]:
    return {CLUSTER: Resources(version, {"c": {"name": "c", "@type": CLUSTER}})}


def saved(path) -> dict[str, str]:
    """Per proxy, the version of clusters on disk."""
    return {proxy: data[CLUSTER]["version"] for proxy, data in orjson.loads(path.read_bytes()).items()}


def test_a_backend_hears_acked_only_once_it_is_on_disk(tmp_path):
    """A server killed right after the backend heard "acked" must restart with what was acknowledged:
    Control.wait returns only after the saver wrote it, also inside the saver's tick after a write."""
    path = tmp_path / "xds-snapshots.json"

    async def run() -> list[dict[str, str]]:
        store = server.Store(path)
        control = server.Control(store)
        saver = asyncio.create_task(store.saver())
        seen = []
        try:
            for version in ("one", "two", "three"):
                # What remember_good does once a proxy acknowledged everything it was sent.
                store.good["p"] = snapshot(version)
                store.mark_dirty()
                report = await control.wait({"proxies": ["p"], "timeout": 5}, None)
                assert report == {"nacked": {}, "pending": {}}
                seen.append(saved(path))
        finally:
            saver.cancel()
        return seen

    assert asyncio.run(run()) == [{"p": "one"}, {"p": "two"}, {"p": "three"}]
    # And a server started on that file serves it.
    assert server.Store(path).wanted["p"][CLUSTER].version == "three"
