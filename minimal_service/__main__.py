"""python -m minimal_service: serve on SERVICE_ADDRESS:SERVICE_PORT until SIGTERM."""

from __future__ import annotations

import sys

from minimal_service.config import ConfigError, Settings
from minimal_service.server import serve


def main() -> int:
    try:
        settings = Settings.from_env()
    except ConfigError as error:
        print(f"minimal-service: {error}", file=sys.stderr)
        return 2
    return serve(settings)


if __name__ == "__main__":
    sys.exit(main())
