"""python -m meshy.dashboard --state DIR --listen HOST:PORT: the mesh's metrics endpoint and dashboard."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from meshy.dashboard.server import Dashboard, serve
from meshy.local.statedir import LocalError, loopback_address


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m meshy.dashboard", description=__doc__)
    parser.add_argument("--state", required=True, help="state directory of the local mesh")
    parser.add_argument("--listen", default="127.0.0.1:20001", help="loopback HOST:PORT to serve on")
    args = parser.parse_args(argv)
    try:
        host, port = loopback_address("dashboard", args.listen)
    except LocalError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    # Observing yields to the traffic it observes: on a busy machine the proxies get the CPU first.
    os.nice(10)
    dashboard = Dashboard(Path(args.state))
    try:
        server = serve(dashboard, host, port)
    except OSError as error:
        print(f"error: cannot listen on {host}:{port} ({error.strerror}); choose another --listen.", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    ticks = threading.Thread(target=dashboard.run_ticks, daemon=True)
    ticks.start()
    print(f"dashboard and /metrics on http://{host}:{port}", flush=True)
    server.serve_forever()
    dashboard.stopped.set()
    return 0


if __name__ == "__main__":
    sys.exit(main())
