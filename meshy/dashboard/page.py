"""The dashboard's documents: the page (a static edge table that works without
JavaScript, the graph drawn by Cytoscape.js when it runs), the graph as JSON,
and the time series as SVG drawn on the server."""

from __future__ import annotations

import html
import math
from dataclasses import asdict

from meshy.dashboard.graph import Edge, Graph

REFRESH_SECONDS = 3
CHART_WIDTH, CHART_HEIGHT = 560, 160
COLOURS = ("#1b6ac9", "#e07b00", "#2f9e44", "#c92a2a", "#7048e8", "#0c8599", "#868e96")


def milliseconds(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f} ms"


def edge_rows(graph: Graph) -> list[dict]:
    names = {node.id: node.label for node in graph.nodes.values()}
    rows = []
    for edge in graph.edges():
        row = asdict(edge)
        row.update(
            source_label=names.get(edge.source, edge.source),
            target_label=names.get(edge.target, edge.target),
            p50=milliseconds(edge.p50_ms),
            p99=milliseconds(edge.p99_ms),
            p50_ms=None if math.isnan(edge.p50_ms) else edge.p50_ms,
            p99_ms=None if math.isnan(edge.p99_ms) else edge.p99_ms,
        )
        rows.append(row)
    return rows


def graph_json(graph: Graph) -> dict:
    return {
        "nodes": [asdict(node) for node in graph.nodes.values()],
        "edges": edge_rows(graph),
    }


def edge_label(edge: Edge) -> str:
    return f"{edge.rate:.1f} rps, {edge.split:.0%}"


def table(graph: Graph) -> str:
    header = "<tr><th>from</th><th>to</th><th>requests</th><th>req/s</th><th>split</th><th>errors</th><th>p50</th><th>p99</th><th>attempts</th></tr>"
    rows = [
        "<tr class=edge>"
        + "".join(
            f"<td>{html.escape(str(cell))}</td>"
            for cell in (
                row["source_label"],
                row["target_label"],
                row["requests"],
                f"{row['rate']:.2f}",
                f"{row['split']:.0%}",
                f"{row['error_share']:.1%}",
                row["p50"],
                row["p99"],
                row["attempts"] or "",
            )
        )
        + "</tr>"
        for row in edge_rows(graph)
    ]
    return f"<table id=edges>{header}{''.join(rows)}</table>"


def chart(points: list[tuple[float, dict[str, int]]], step: float, title: str) -> str:
    """A line per key of request rate over time; the newest point on the right."""
    keys = sorted({key for _, counts in points for key in counts})
    peak = max([counts.get(k, 0) / step for _, counts in points for k in keys] or [1.0]) or 1.0
    count = max(len(points) - 1, 1)
    lines, legend = [], []
    for index, key in enumerate(keys):
        colour = COLOURS[index % len(COLOURS)]
        coords = " ".join(
            f"{40 + i * (CHART_WIDTH - 50) / count:.1f},{CHART_HEIGHT - 20 - counts.get(key, 0) / step / peak * (CHART_HEIGHT - 40):.1f}"
            for i, (_, counts) in enumerate(points)
        )
        lines.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{coords}"/>')
        legend.append(
            f'<text x="{40 + index * 110}" y="{CHART_HEIGHT - 4}" fill="{colour}" font-size="11">{html.escape(key)}</text>'
        )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{CHART_WIDTH}" height="{CHART_HEIGHT}" '
        f'font-family="sans-serif"><text x="4" y="14" font-size="12">{html.escape(title)} (peak {peak:.1f} req/s)</text>'
        f'<line x1="40" y1="{CHART_HEIGHT - 20}" x2="{CHART_WIDTH - 10}" y2="{CHART_HEIGHT - 20}" stroke="#999"/>'
        + "".join(lines)
        + "".join(legend)
        + "</svg>"
    )


def series_svg(graph: Graph, kind: str, step: float) -> str:
    index = 1 if kind == "versions" else 2
    points = [(item[0], item[index]) for item in graph.series]
    title = "requests per second by version" if kind == "versions" else "responses per second by code"
    return chart(points, step, title)


def page(graph: Graph, step: float) -> str:
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>kube-meshy: local mesh</title>
<noscript><meta http-equiv="refresh" content="{REFRESH_SECONDS}"></noscript>
<style>
body {{ font-family: sans-serif; margin: 1em; }}
#graph {{ width: 100%; height: 420px; border: 1px solid #ccc; }}
table {{ border-collapse: collapse; margin-top: 1em; }}
td, th {{ border: 1px solid #ccc; padding: 2px 8px; text-align: left; }}
</style></head>
<body>
<h1>Local mesh: versioned app graph (last minute)</h1>
<div id="graph"></div>
<div id="table">{table(graph)}</div>
<div id="series">
<img id="versions" alt="request rate by version" src="/series/versions.svg">
<img id="codes" alt="responses by code" src="/series/codes.svg">
</div>
<p><a href="/metrics">/metrics</a> (Istio's standard metrics, Prometheus text)</p>
<script src="/static/cytoscape.min.js"></script>
<script src="/static/dashboard.js"></script>
</body></html>
"""
