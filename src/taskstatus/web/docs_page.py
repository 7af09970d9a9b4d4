"""The page at ``/api/v1/docs``: the OpenAPI document made readable, with nothing fetched
from elsewhere.

FastAPI's own page loads Swagger UI from a CDN, which an intranet or a strict Content Security
Policy blocks, and which would run third-party script on the API's origin. This page is one
small inline script that lists each operation with its parameters and answers; tools that
want more (Swagger UI, Redoc, client generators) read ``openapi.json`` itself.
"""

from __future__ import annotations

from fastapi.responses import HTMLResponse

__all__ = ["docs_page"]

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>taskstatus REST API</title>
<style>
body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}
code,.path{font-family:ui-monospace,monospace}
.op{border:1px solid #ccc;border-radius:6px;padding:.5rem 1rem;margin:1rem 0}
.method{font-weight:bold;text-transform:uppercase;margin-right:.5rem}
td{padding:.1rem .6rem;vertical-align:top}
</style></head>
<body><h1>taskstatus REST API</h1>
<p>The machine-readable description: <a href="openapi.json">openapi.json</a> (OpenAPI 3.1).</p>
<div id="ops">Loading…</div>
<script>
"use strict";
function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text) node.textContent = text;
  if (cls) node.className = cls;
  return node;
}
fetch("openapi.json").then(r => r.json()).then(spec => {
  const ops = document.getElementById("ops");
  ops.textContent = "";
  for (const [path, methods] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(methods)) {
      const box = el("div", "", "op");
      const head = el("h3");
      head.append(el("span", method, "method"), el("span", path, "path"));
      box.append(head, el("p", op.summary || ""));
      const rows = el("table");
      for (const p of op.parameters || []) {
        const row = el("tr");
        row.append(el("td", p.name + (p.required ? " *" : ""), "path"), el("td", p.in),
                   el("td", p.description || ""));
        rows.append(row);
      }
      box.append(rows);
      const answers = Object.entries(op.responses || {})
        .map(([code, r]) => code + " " + (r.description || "")).join(" · ");
      box.append(el("p", "Answers: " + answers));
      ops.append(box);
    }
  }
}).catch(err => { document.getElementById("ops").textContent = "Cannot load: " + err; });
</script></body></html>
"""


def docs_page() -> HTMLResponse:
    return HTMLResponse(_PAGE)
