"""The head service as it should be vs as it is → the change that closes the gap, with its reason. Pure.

Annotations and the type are patched in place: the Service keeps its clusterIP and every connection
through it. Kubernetes makes `clusterIP` immutable, so moving between headless (clusterIP None) and
any other type needs a new Service: deleted and created again, reported as a Warning.

Only annotations the operator applied are ever removed: the keys it applied last are kept in the
OWNED_ANNOTATIONS annotation (as kubectl's last-applied configuration does), so those a cloud
controller or a person added stay.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from swarm_operator.resources import labels
from swarm_operator.resources.labels import OWNED_ANNOTATIONS


@dataclass(frozen=True)
class ServiceChange:
    reason: str
    patch: Mapping[str, Any] | None = None  # a JSON merge patch of the live Service
    recreate: bool = False  # delete it and create the desired one


def _owned_keys(annotations: Mapping[str, Any]) -> set[str]:
    try:
        keys = json.loads(annotations.get(OWNED_ANNOTATIONS) or "[]")
    except ValueError:
        return set()  # garbled by hand: remove nothing rather than guess
    return {k for k in keys if isinstance(k, str)} if isinstance(keys, list) else set()


def _headless(service: Mapping[str, Any]) -> bool:
    return (service.get("spec") or {}).get("clusterIP") == "None"


def _type(service: Mapping[str, Any]) -> str:
    return str((service.get("spec") or {}).get("type") or "ClusterIP")


def _shown(service: Mapping[str, Any]) -> str:
    return "Headless" if _headless(service) else _type(service)


def service_change(desired: Mapping[str, Any], live: Mapping[str, Any]) -> ServiceChange | None:
    """None when the live Service already is as desired (for the fields the operator reconciles)."""
    name = desired["metadata"]["name"]
    if _headless(desired) != _headless(live):
        return ServiceChange(
            reason=f"{name}: spec.head.serviceType changed from {_shown(live)} to {_shown(desired)}; a Service's "
                   "clusterIP cannot change, so it is deleted and created again (Ray nodes reconnect through it)",
            recreate=True)
    want: Mapping[str, str] = desired["metadata"].get("annotations") or {}
    have: Mapping[str, Any] = (live.get("metadata") or {}).get("annotations") or {}
    annotations: dict[str, str | None] = {k: v for k, v in want.items() if have.get(k) != v}
    dropped = sorted(k for k in _owned_keys(have) - set(want) if k in have)
    annotations.update(dict.fromkeys(dropped))
    if OWNED_ANNOTATIONS in have and OWNED_ANNOTATIONS not in want:
        annotations[OWNED_ANNOTATIONS] = None
    patch: dict[str, Any] = {}
    reasons: list[str] = []
    set_keys = sorted(k for k, v in annotations.items() if v is not None and k != OWNED_ANNOTATIONS)
    if set_keys:
        reasons.append(f"annotations {', '.join(set_keys)} set")
    if dropped:
        reasons.append(f"annotations {', '.join(dropped)} removed")
    if annotations:
        patch["metadata"] = {"annotations": annotations}
    if _type(desired) != _type(live):
        patch["spec"] = {"type": _type(desired)}
        reasons.append(f"type {_type(live)} → {_type(desired)}")
    want_selector: Mapping[str, str] = desired["spec"]["selector"]
    have_selector: Mapping[str, Any] = (live.get("spec") or {}).get("selector") or {}
    if dict(want_selector) != dict(have_selector):
        # A merge patch: keys the desired selector no longer has are removed with null.
        selector: dict[str, str | None] = {k: v for k, v in want_selector.items() if have_selector.get(k) != v}
        selector.update(dict.fromkeys(k for k in have_selector if k not in want_selector))
        patch.setdefault("spec", {})["selector"] = selector
        reasons.append(f"selector {labels.selector_string(want_selector)} (the current head generation)")
    if not patch:
        return None
    return ServiceChange(reason=f"{name}: " + "; ".join(reasons or ["annotation bookkeeping"]), patch=patch)
