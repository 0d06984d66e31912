"""docs/contract/schemas as validators: what every payload on the wire is checked against."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

CONTRACT = Path(__file__).resolve().parents[2] / "docs" / "contract"


def _validators() -> dict[str, Draft202012Validator]:
    schemas = {
        p.stem: json.loads(p.read_text()) for p in sorted((CONTRACT / "schemas").glob("*.json"))
    }
    registry: Registry[Any] = Registry().with_resources(
        (f"{name}.json", Resource.from_contents(schema)) for name, schema in schemas.items()
    )
    validators = {}
    for name, schema in schemas.items():
        Draft202012Validator.check_schema(schema)
        validators[name] = Draft202012Validator(schema, registry=registry)
    return validators


VALIDATORS = _validators()


def check(schema: str, payload: Any) -> None:
    """Fail the test, naming every error, unless ``payload`` fits ``schemas/<schema>.json``."""
    errors = sorted(VALIDATORS[schema].iter_errors(payload), key=lambda e: list(e.path))
    assert not errors, f"{schema}: {[f'{list(e.path)}: {e.message}' for e in errors]}"
