"""python -m meshy.local.xds --socket PATH --state FILE: the mesh's ADS server."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from meshy.local.xds.server import serve


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m meshy.local.xds", description=__doc__)
    parser.add_argument("--socket", required=True, type=Path, help="Unix socket to listen on (made owner-only)")
    parser.add_argument("--state", required=True, type=Path, help="file keeping the last acknowledged snapshots")
    args = parser.parse_args()
    asyncio.run(serve(args.socket, args.state))


if __name__ == "__main__":
    main()
