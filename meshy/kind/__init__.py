"""The cluster path: kind + local registry + Istio, as argv commands run by a runner.

Every step first asks whether its work is already done (so reruns change
nothing), then acts through the runner it is given: the real one, or under
`inv --dry` one that prints each command instead (meshy/kind/context.py).
"""
