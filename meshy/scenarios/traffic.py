"""Sending many requests quickly: a few threads, each with its own keep-alive session."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import requests

WORKERS = 6


@dataclass(frozen=True)
class Result:
    status: int  # 0: no answer (connection error)
    body: str
    seconds: float

    def json(self) -> dict:
        try:
            value = json.loads(self.body)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class Request:
    method: str
    url: str
    headers: dict[str, str]
    data: str | None = None


def bounce_request(ingress: str, endpoint: str, host: str = "minimal.svc.kind.org") -> Request:
    body = f'{{"rebound":"true","endpoint":"{endpoint}"}}'
    return Request("POST", f"{ingress}/bounce", {"Host": host}, body)


def get_request(ingress: str, host: str, path: str = "/") -> Request:
    return Request("GET", f"{ingress}{path}", {"Host": host})


def send(
    request: Request, n: int, progress: Callable[[int, int], None] | None = None, workers: int = WORKERS
) -> list[Result]:
    """n copies of request, in order of completion; never raises for HTTP failures."""
    local = threading.local()
    done = 0
    lock = threading.Lock()

    def one(_: int) -> Result:
        nonlocal done
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
            session.trust_env = False  # never through a user's HTTP proxy: everything is on loopback
        started = time.perf_counter()
        try:
            response = session.request(
                request.method,
                request.url,
                headers=request.headers,
                data=request.data,
                timeout=30,
                allow_redirects=False,  # a redirect is an answer to judge (Kiali's 302), not a hop to follow
            )
            result = Result(response.status_code, response.text, time.perf_counter() - started)
        except requests.RequestException as error:
            result = Result(0, str(error), time.perf_counter() - started)
        with lock:
            done += 1
            if progress and (done % 50 == 0 or done == n):
                progress(done, n)
        return result

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, range(n)))
