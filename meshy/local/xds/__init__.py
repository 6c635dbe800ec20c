"""The local mesh's xDS control plane: proxies get their configuration over ADS.

Each Envoy bootstraps with its node id and an ADS stream to a Unix socket in
the state directory; the server (`python -m meshy.local.xds`, a supervisord
program of the mesh) pushes clusters, listeners and route configurations
State of the World, and the backend hands it new snapshots over a small
control API on the same socket, then waits for every proxy's ACK or NACK.
"""
