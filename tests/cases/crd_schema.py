"""The SwarmCluster CRD's OpenAPI schema, checked locally with jsonschema (no API server).

Kubernetes' extensions are mapped: x-kubernetes-int-or-string → anyOf integer/string, the other
x-kubernetes-* keys are dropped, and Go RE2's "$" becomes Python's "\\Z". The CRD's defaults are
applied first, as the API server does. CEL rules (x-kubernetes-validations) are NOT evaluated:
only a real API server can (tests/integration).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import yaml

REPO = Path(__file__).resolve().parents[2]
CRD = yaml.safe_load((REPO / "crds" / "swarmcluster.yaml").read_text())
SAMPLES = sorted((REPO / "manifests" / "samples").glob("*.yaml"))


def version() -> dict[str, Any]:
    """The CRD's only version."""
    versions = CRD["spec"]["versions"]
    if len(versions) != 1:
        raise AssertionError(f"expected one version, found {len(versions)}")
    return versions[0]  # type: ignore[no-any-return]


ROOT: dict[str, Any] = version()["schema"]["openAPIV3Schema"]

# --- schema walking and conversion -------------------------------------------------------------

SUBSCHEMA_MAPS = ("properties",)
SUBSCHEMA_ONE = ("items", "additionalProperties", "not")
SUBSCHEMA_LISTS = ("anyOf", "allOf", "oneOf")


def walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with a readable path: spec.workerGroups[].resources.cpu, …{*} for map values."""
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from walk(sub, f"{path}.{name}" if path else name)
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{*}}")


def re2_to_python(pattern: str) -> str:
    """In RE2 (no multi-line flag) "$" matches only at the very end; Python's also before a final newline."""
    return re.sub(r"(?<!\\)\$", r"\\Z", pattern)


def to_json_schema(node: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-"):
            continue
        if key in SUBSCHEMA_MAPS:
            out[key] = {k: to_json_schema(v) for k, v in value.items()}
        elif key in SUBSCHEMA_ONE and isinstance(value, dict):
            out[key] = to_json_schema(value)
        elif key in SUBSCHEMA_LISTS:
            out[key] = [to_json_schema(v) for v in value]
        elif key == "pattern":
            out[key] = re2_to_python(value)
        else:
            out[key] = copy.deepcopy(value)
    if node.get("x-kubernetes-int-or-string"):
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    return out


def apply_defaults(node: dict[str, Any], value: Any) -> Any:
    """Structural defaulting as the API server does it: set missing defaulted fields, then recurse."""
    if isinstance(value, dict):
        for name, sub in node.get("properties", {}).items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                value[name] = apply_defaults(sub, value[name])
        if isinstance(node.get("additionalProperties"), dict):
            for key in value:
                value[key] = apply_defaults(node["additionalProperties"], value[key])
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        return [apply_defaults(node["items"], item) for item in value]
    return value


VALIDATOR = jsonschema.Draft4Validator(to_json_schema(ROOT))


def k8s_path(error: jsonschema.ValidationError) -> list[str]:
    """The field path(s) Kubernetes would name for a jsonschema error (required → the missing field)."""
    path = ""
    for part in error.absolute_path:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = [n for n in error.validator_value if n not in error.instance]
        return [f"{path}.{n}" if path else n for n in missing]
    return [path]


def schema_errors(manifest: dict[str, Any]) -> list[str]:
    """Kubernetes-style paths of every schema violation of `manifest` (defaults applied first); [] if valid."""
    obj = apply_defaults(ROOT, copy.deepcopy(manifest))
    return sorted(p for e in VALIDATOR.iter_errors(obj) for p in k8s_path(e))
