"""The local backend: the walkthrough's mesh as local processes with real Envoy proxies.

Layers, each pure and golden-tested: resources (validated manifests) ->
model (a small typed mesh) -> envoy (Envoy configuration). runtime runs it.
"""
