"""The outgoing GET of POST /bounce, through HTTP_PROXY when one is set."""

from __future__ import annotations

import requests
import urllib3


class BounceError(Exception):
    """The endpoint could not be resolved, connected to or read."""


CONNECT_TIMEOUT = 2.0
READ_TIMEOUT = 30.0


def fetch_status(endpoint: str, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    """GET the endpoint; return its status code and response headers.

    requests honours HTTP_PROXY / NO_PROXY from the environment, which is how
    the local backend routes this call through the pod's sidecar.
    """
    try:
        with requests.get(endpoint, headers=headers, timeout=(CONNECT_TIMEOUT, READ_TIMEOUT), stream=True) as response:
            response.raw.read(decode_content=False)
            return response.status_code, dict(response.headers)
    except requests.RequestException as error:
        raise BounceError(_reason(error)) from None
    except urllib3.exceptions.HTTPError:
        # Reading the raw body bypasses requests' wrapping: a proxy resetting the stream after the
        # headers (e.g. a route timeout firing mid-answer) surfaces as urllib3's ProtocolError.
        raise BounceError("the endpoint's answer broke off") from None


def _reason(error: requests.RequestException) -> str:
    if isinstance(error, requests.ConnectionError):
        return "could not resolve or connect to the endpoint"
    if isinstance(error, requests.Timeout):
        return "the endpoint did not answer in time"
    return type(error).__name__
