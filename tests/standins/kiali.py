"""Kiali's answer at its root, for the stand-in cluster: / redirects to the web root /kiali/.

Istio's samples/addons/kiali.yaml sets `web_root: /kiali` in 1.8.6, 1.28.10
and 1.30.3. Usage: kiali.py ADDRESS PORT (loopback only).
"""

from __future__ import annotations

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Redirect(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path.startswith("/kiali"):
            self.send_response(200)
        else:
            self.send_response(302)
            self.send_header("Location", "/kiali/")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


if __name__ == "__main__":
    ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), Redirect).serve_forever()
