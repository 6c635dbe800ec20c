// Redraws the graph, the edge table and the charts every few seconds from /graph.json.
"use strict";
const REFRESH_MS = 3000;
const style = [
  { selector: "node", style: { label: "data(label)", "font-size": 11, "text-valign": "bottom" } },
  { selector: "node[kind = 'service']", style: { shape: "triangle", "background-color": "#1b6ac9" } },
  { selector: "node[kind = 'gateway']", style: { shape: "round-rectangle", "background-color": "#7048e8" } },
  { selector: "node[kind = 'workload']", style: { shape: "ellipse", "background-color": "#2f9e44" } },
  { selector: "node[kind = 'unknown']", style: { shape: "diamond", "background-color": "#868e96" } },
  { selector: "node[kind = 'app']", style: { "background-opacity": 0.08, "text-valign": "top" } },
  { selector: "edge", style: { label: "data(label)", "font-size": 10, "curve-style": "bezier",
      "target-arrow-shape": "triangle", width: 2, "line-color": "data(colour)", "target-arrow-color": "data(colour)" } },
];
const cy = cytoscape({ container: document.getElementById("graph"), style: style });

function colour(edge) {
  return edge.error_share > 0.2 ? "#c92a2a" : edge.error_share > 0.01 ? "#e07b00" : "#2f9e44";
}

function render(data) {
  const elements = data.nodes.map((n) => ({ group: "nodes", data: { id: n.id, label: n.label, kind: n.kind,
    parent: n.parent || undefined } }));
  data.edges.forEach((e) => elements.push({ group: "edges", data: {
    id: e.source + "->" + e.target, source: e.source, target: e.target, colour: colour(e),
    label: e.rate.toFixed(1) + " rps " + Math.round(e.split * 100) + "%" } }));
  const before = cy.elements().map((el) => el.id()).sort().join();
  const after = elements.map((el) => el.data.id).sort().join();
  if (before !== after) {
    cy.elements().remove();
    cy.add(elements);
    cy.layout({ name: "breadthfirst", directed: true, spacingFactor: 1.1 }).run();
  } else {
    elements.forEach((el) => cy.getElementById(el.data.id).data(el.data));
  }
  document.getElementById("graph").dataset.nodes = cy.nodes().length;
  document.getElementById("graph").dataset.edges = cy.edges().length;
}

async function refresh() {
  try {
    const response = await fetch("/graph.json");
    render(await response.json());
    document.getElementById("table").innerHTML = await (await fetch("/table")).text();
    for (const id of ["versions", "codes"]) {
      document.getElementById(id).src = "/series/" + id + ".svg?t=" + Date.now();
    }
  } catch (error) {
    console.warn("dashboard refresh failed", error);
  }
}
refresh();
setInterval(refresh, REFRESH_MS);
