"""The cluster path: kind + local registry + Istio, driven through invoke contexts.

Every step first asks whether its work is already done (so reruns change
nothing), then runs commands through the context it is given: a real one,
`inv --dry` (which echoes), or a MockContext in tests.
"""
