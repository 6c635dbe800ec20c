"""The kubectl stand-in hands every kind the local backend enforces to the mesh behind it.

A kind it only records would pass `kubectl apply` and change nothing, so a kind scenario on the
stand-ins would judge a mesh without it (as happened once with RequestAuthentication).
"""

from __future__ import annotations

from meshy.local.shapes import KINDS
from tests.standins.standin import LOCAL_KINDS


def test_every_kind_the_local_backend_enforces_reaches_the_mesh_behind_the_stand_ins():
    # Namespaces are created by the stand-in itself (the local backend needs no Namespace object).
    assert set(KINDS) - {"Namespace"} <= LOCAL_KINDS
