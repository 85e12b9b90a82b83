"""A readable page of the API, rendered from the OpenAPI document (so it cannot disagree with it).

Self-contained HTML, no JavaScript from a CDN: it works on a machine without internet access.
"""

from __future__ import annotations

import json
from typing import Any

from jinja2 import Environment, select_autoescape

_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ info.title }} API v{{ info.version }}</title>
<style>
body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
h2{margin-top:2.5rem;border-bottom:1px solid #ddd}
.op{margin:1.2rem 0;padding:.6rem 1rem;border-left:4px solid #4a7}
.m{font:bold 13px monospace;padding:2px 6px;border-radius:3px;background:#eee}
code,pre{font:13px monospace;background:#f6f6f6}pre{padding:.6rem;overflow:auto}
table{border-collapse:collapse}td,th{padding:2px 8px;border-bottom:1px solid #eee;text-align:left;vertical-align:top}
</style></head><body>
<h1>{{ info.title }} API v{{ info.version }}</h1>
<p>{{ info.description }}</p>
<p>Machine-readable: <a href="/v1/openapi.json">/v1/openapi.json</a> (OpenAPI 3.1). Authenticate with
<code>Authorization: Bearer &lt;token&gt;</code> or a session cookie (then send <code>X-CSRF-Token</code> on
POST, PUT, PATCH and DELETE).</p>
{% for tag, ops in groups %}<h2>{{ tag }}</h2>
{% for op in ops %}<div class="op" id="{{ op.operationId }}">
<p><span class="m">{{ op.method }}</span> <code>{{ op.path }}</code> — {{ op.summary }}
{% if op.allow %}<br><small>allowed: {{ op.allow|join(", ") }}</small>{% endif %}</p>
{% if op.description %}<p>{{ op.description }}</p>{% endif %}
{% if op.parameters %}<table><tr><th>parameter</th><th>in</th><th>schema</th><th></th></tr>
{% for p in op.parameters %}<tr><td><code>{{ p.name }}</code>{% if p.required %} *{% endif %}</td><td>{{ p.in }}</td>
<td><code>{{ p.schema|tojson }}</code></td><td>{{ p.description or "" }}</td></tr>{% endfor %}</table>{% endif %}
{% if op.body %}<p>Body: <a href="#schema-{{ op.body }}">{{ op.body }}</a></p>{% endif %}
<p>Answers: {% for code, name in op.responses %}<code>{{ code }}</code>{% if name %} <a href="#schema-{{ name }}">{{ name }}</a>{% endif %}{% if not loop.last %}, {% endif %}{% endfor %}</p>
</div>{% endfor %}{% endfor %}
<h2>Schemas</h2>
{% for name, schema in schemas %}<h3 id="schema-{{ name }}">{{ name }}</h3><pre>{{ schema }}</pre>{% endfor %}
</body></html>
"""

_environment = Environment(autoescape=select_autoescape(default=True))
_template = _environment.from_string(_TEMPLATE)


def _ref_name(schema: dict[str, Any]) -> str | None:
    ref = schema.get("$ref")
    return ref.rsplit("/", 1)[-1] if isinstance(ref, str) else None


def render(document: dict[str, Any]) -> str:
    groups: dict[str, list[dict[str, Any]]] = {}
    for path, methods in document["paths"].items():
        for method, op in methods.items():
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
            responses = [
                (code, _ref_name(r.get("content", {}).get("application/json", {}).get("schema", {})))
                for code, r in op["responses"].items()
            ]
            groups.setdefault((op.get("tags") or ["service"])[0], []).append({
                "method": method.upper(), "path": path, "summary": op.get("summary", ""),
                "description": op.get("description", ""), "operationId": op["operationId"],
                "allow": op.get("x-allow"), "parameters": op.get("parameters", []),
                "body": _ref_name(body), "responses": responses,
            })
    schemas = [(name, json.dumps(s, indent=2)) for name, s in sorted(document["components"]["schemas"].items())]
    return _template.render(info=document["info"], groups=list(groups.items()), schemas=schemas)
