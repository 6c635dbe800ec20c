"""A live view of the local mesh: Kiali's versioned-app graph, time series, and /metrics."""
