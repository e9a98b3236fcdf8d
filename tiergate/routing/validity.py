"""Validity checks a cascade runs on the small tier's answer before keeping it.

    schema_errors({"type": "object", "required": ["city"]}, {"town": "x"})   # ["$: missing required 'city'"]
    requested_schema(body)        # the json_schema a request's response_format asks for, or None

`schema_errors` uses the `jsonschema` package when it is installed, and otherwise checks the subset of JSON
Schema that response_format schemas use: type (with null and lists of types), properties, required,
additionalProperties, items, enum, const, minimum/maximum, minLength/maxLength, minItems/maxItems,
anyOf/oneOf/allOf and local $ref into $defs/definitions.
"""

from __future__ import annotations

import json
from typing import Any

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,), "array": (list,), "string": (str,), "boolean": (bool,), "null": (type(None),),
    "integer": (int,), "number": (int, float),
}


def requested_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    fmt = body.get("response_format")
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        return None
    spec = fmt.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    return schema if isinstance(schema, dict) else {}


def wants_json(body: dict[str, Any]) -> bool:
    fmt = body.get("response_format")
    return isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema")


def parse_json_answer(text: str | None) -> tuple[bool, Any]:
    if text is None:
        return False, None
    s = text.strip()
    if s.startswith("```"):  # a fenced block: the model wrapped its JSON
        s = s.strip("`")
        s = s[4:] if s.lower().startswith("json") else s
    try:
        return True, json.loads(s)
    except (json.JSONDecodeError, ValueError):
        return False, None


def _is_type(value: Any, name: str) -> bool:
    if name in ("integer", "number") and isinstance(value, bool):
        return False
    if name == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _TYPES.get(name, (object,)))


def _resolve(ref: str, root: dict[str, Any]) -> dict[str, Any]:
    node: Any = root
    for part in ref.removeprefix("#/").split("/"):
        node = node.get(part, {}) if isinstance(node, dict) else {}
    return node if isinstance(node, dict) else {}


def _check(schema: Any, value: Any, path: str, root: dict[str, Any], errors: list[str]) -> None:
    if not isinstance(schema, dict) or len(errors) > 20:
        return
    if "$ref" in schema and isinstance(schema["$ref"], str) and schema["$ref"].startswith("#"):
        _check(_resolve(schema["$ref"], root), value, path, root, errors)
    t = schema.get("type")
    if t is not None:
        names = t if isinstance(t, list) else [t]
        if not any(_is_type(value, n) for n in names):
            errors.append(f"{path}: expected {'/'.join(names)}, got {type(value).__name__}")
            return
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} is not one of {schema['enum']!r}")
    if "const" in schema and value != schema["const"]:
        errors.append(f"{path}: expected {schema['const']!r}")
    for key, bad in (("anyOf", lambda n: n == 0), ("oneOf", lambda n: n != 1)):
        subs = schema.get(key)
        if isinstance(subs, list):
            n_ok = sum(1 for sub in subs if not schema_errors(sub, value, root))
            if bad(n_ok):
                errors.append(f"{path}: does not match {key}")
    for sub in schema.get("allOf") or []:
        _check(sub, value, path, root, errors)
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        for req in schema.get("required") or []:
            if req not in value:
                errors.append(f"{path}: missing required {req!r}")
        for k, v in value.items():
            if k in props:
                _check(props[k], v, f"{path}.{k}", root, errors)
            elif schema.get("additionalProperties") is False:
                errors.append(f"{path}: unexpected property {k!r}")
            elif isinstance(schema.get("additionalProperties"), dict):
                _check(schema["additionalProperties"], v, f"{path}.{k}", root, errors)
    if isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict):
            for i, v in enumerate(value):
                _check(items, v, f"{path}[{i}]", root, errors)
        if "minItems" in schema and len(value) < schema["minItems"]:
            errors.append(f"{path}: fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(f"{path}: more than {schema['maxItems']} items")
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            errors.append(f"{path}: shorter than {schema['minLength']}")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{path}: longer than {schema['maxLength']}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{path}: below {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{path}: above {schema['maximum']}")


def schema_errors(schema: dict[str, Any], value: Any, root: dict[str, Any] | None = None) -> list[str]:
    """Where `value` breaks `schema` (empty when it conforms)."""
    try:
        import jsonschema  # type: ignore[import-untyped]
    except ImportError:
        errors: list[str] = []
        _check(schema, value, "$", root if root is not None else schema, errors)
        return errors
    validator = jsonschema.Draft202012Validator(schema)
    return [f"$.{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(value)][:20]
