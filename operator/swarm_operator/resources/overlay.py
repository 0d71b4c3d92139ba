"""Merge a user's pod template overlay into a generated pod, keeping what the operator relies on. Pure.

Rules (documented in docs/crd.md, "Pod template overlays"):
- metadata labels/annotations: the user's are added; the operator's selector labels win.
- the Ray container is the container named "ray" in the overlay, if any: the user's fields win
  (image, env appended, volumeMounts appended, securityContext, ports appended …). The fields the
  operator sets (spec.rules.OPERATOR_CONTAINER_FIELDS) are refused by spec/template.py (Valid=False naming the field),
  never merged.
- every other container is a sidecar, appended (an overlay without a "ray" container only adds
  sidecars); volumes are appended by name (the operator's win).
- every other pod spec field from the user wins, except `restartPolicy` (workers must not be
  restarted in place: the operator replaces them).
Where the operator's value wins over one the template gives, :func:`overridden` names it: the operator
reports those in a Warning Event, so nothing a template says is dropped silently.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from swarm_operator.spec.rules import OPERATOR_CONTAINER_FIELDS, RAY_CONTAINER

OPERATOR_POD_FIELDS = frozenset({"containers", "volumes", "restartPolicy"})
APPENDED_CONTAINER_LISTS = ("env", "volumeMounts", "ports", "envFrom")


def _merge_named(ours: list[dict[str, Any]], theirs: list[Any], key: str = "name") -> list[dict[str, Any]]:
    """Ours first; theirs appended unless an item of the same key already exists (ours win)."""
    taken = [item.get(key) for item in ours]  # a list: membership works for any value
    return ours + [copy.deepcopy(dict(t)) for t in theirs if isinstance(t, Mapping) and t.get(key) not in taken]


def _user_ray_container(containers: list[Any]) -> tuple[Mapping[str, Any] | None, list[Mapping[str, Any]]]:
    """The container named "ray" (None: there is none), and the sidecars."""
    named = [c for c in containers if isinstance(c, Mapping)]
    ray = next((c for c in named if c.get("name") == RAY_CONTAINER), None)
    return ray, [c for c in named if c is not ray]


def merge_container(ours: dict[str, Any], theirs: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(ours)
    for key, value in theirs.items():
        if key == "name" or key in OPERATOR_CONTAINER_FIELDS:
            continue
        if key in APPENDED_CONTAINER_LISTS and isinstance(value, list):
            merged[key] = _merge_named(merged.get(key, []), value,
                                       "containerPort" if key == "ports" else "name")
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def apply_overlay(pod: dict[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """Return a new pod: the generated `pod` with the user's `overlay` merged in."""
    out = copy.deepcopy(pod)
    meta_overlay = overlay.get("metadata") or {}
    for key in ("labels", "annotations"):
        user = dict(meta_overlay.get(key) or {})
        user.update(out["metadata"].get(key) or {})  # ours win
        if user:
            out["metadata"][key] = user
    spec_overlay = overlay.get("spec") or {}
    spec = out["spec"]
    for key, value in spec_overlay.items():
        if key not in OPERATOR_POD_FIELDS:
            spec[key] = copy.deepcopy(value)
    user_ray, sidecars = _user_ray_container(list(spec_overlay.get("containers") or []))
    containers = spec["containers"]
    if user_ray is not None:
        containers[0] = merge_container(containers[0], user_ray)
    spec["containers"] = _merge_named(containers, sidecars)
    spec["volumes"] = _merge_named(spec.get("volumes", []), list(spec_overlay.get("volumes") or []))
    return out


def overridden(pod: Mapping[str, Any], overlay: Mapping[str, Any]) -> list[str]:
    """The paths, inside ``overlay``, of the values that :func:`apply_overlay` drops for the operator's own
    (``pod`` is the generated pod before the overlay). Fields the operator owns outright are refused by
    spec.py instead, so they are not listed here."""
    out: list[str] = []
    meta_overlay = overlay.get("metadata") or {}
    for key in ("labels", "annotations"):
        ours = pod["metadata"].get(key) or {}
        out += [f"metadata.{key}.{k}" for k, v in (meta_overlay.get(key) or {}).items() if k in ours and ours[k] != v]
    spec_overlay = overlay.get("spec") or {}
    spec = pod["spec"]
    if "restartPolicy" in spec_overlay and spec_overlay["restartPolicy"] != spec["restartPolicy"]:
        out.append("spec.restartPolicy")
    for i, c in enumerate(spec_overlay.get("containers") or []):
        if not isinstance(c, Mapping) or c.get("name") != RAY_CONTAINER:
            continue
        for key in APPENDED_CONTAINER_LISTS:
            merge_key = "containerPort" if key == "ports" else "name"
            taken = [item.get(merge_key) for item in spec["containers"][0].get(key) or []]
            out += [f"spec.containers[{i}].{key}[{j}] ({item.get(merge_key)})"
                    for j, item in enumerate(c.get(key) or [])
                    if isinstance(item, Mapping) and item.get(merge_key) in taken]
    taken = [v.get("name") for v in spec.get("volumes") or []]
    out += [f"spec.volumes[{j}] ({v.get('name')})" for j, v in enumerate(spec_overlay.get("volumes") or [])
            if isinstance(v, Mapping) and v.get("name") in taken]
    return out
