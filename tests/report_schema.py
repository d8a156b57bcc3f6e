"""Validation of real reports against docs/report.schema.json (the documented report format, docs/report.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "docs" / "report.schema.json"


def validate(document: Any, definition: str) -> None:
    """Raises jsonschema.ValidationError unless `document` matches `#/$defs/<definition>`."""
    import jsonschema

    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    ref = {"$ref": f"#/$defs/{definition}", "$defs": schema["$defs"]}
    jsonschema.Draft202012Validator(ref).validate(json.loads(json.dumps(document, default=str)))
