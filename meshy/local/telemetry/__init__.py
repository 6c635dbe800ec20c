"""Istio's observation surfaces for the local mesh: access logs, standard metrics.

Vanilla Envoy has no Istio stats filter, so every proxy writes two access
logs per listener (Istio's default text format for people, JSON lines for the
collector) and the collector turns the JSON lines into Istio's metrics.
"""
