"""The published specs: `schemas/openapi.yaml` (the collector and the webhooks) and
`schemas/asyncapi.yaml` (the topics), with the JSON Schemas they name filled in.

A spec names a schema file under components/schemas (`x-parcours-schema: FILE`, and
`x-parcours-optional: [fields]` for what the collector fills in), so the documents
served and printed are built from the very schemas the worker validates with: they
cannot drift apart.
"""

from __future__ import annotations

from typing import Any

import orjson
import yaml

from streams.config.settings import SCHEMAS_DIR

SPECS = {"openapi": "openapi.yaml", "asyncapi": "asyncapi.yaml"}


def spec_document(name: str) -> dict[str, Any]:
    """The spec `name` (openapi or asyncapi) with its schemas embedded."""
    doc = yaml.safe_load((SCHEMAS_DIR / SPECS[name]).read_text(encoding="utf-8"))
    schemas = doc["components"]["schemas"]
    for key, entry in schemas.items():
        if "x-parcours-schema" in entry:
            source = orjson.loads((SCHEMAS_DIR / entry["x-parcours-schema"]).read_bytes())
            optional = entry.get("x-parcours-optional", [])
            schemas[key] = _embedded(source, f"#/components/schemas/{key}", optional)
    return doc


def _embedded(schema: dict[str, Any], pointer: str, optional: list[str]) -> dict[str, Any]:
    """A standalone JSON Schema as a component: its `$defs` references point into the
    document, and the fields in `optional` are no longer required."""
    component = {k: v for k, v in schema.items() if k not in ("$schema", "$id")}
    component["x-parcours-id"] = schema.get("$id", "")
    if optional:
        component["required"] = [f for f in component["required"] if f not in optional]
    text = orjson.dumps(component).decode().replace('"#/$defs/', f'"{pointer}/$defs/')
    return orjson.loads(text)
