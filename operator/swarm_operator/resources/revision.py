"""What a pod was built from, in named parts, so a change can say what it restarts and why. Pure.

A pod carries the hash of its restart-relevant parts (label `swarm.io/template-hash`), each part's own
short hash (annotation `swarm.io/revision`, JSON), and the labels and annotations its template gave it
(annotation `swarm.io/template-metadata`, JSON: each key with a hash of its value). A change to a part
replaces the pod, and the Event names the parts; a change to the template's metadata only is patched onto
the running pod.

The parts are the user's inputs in a canonical form (not the operator's built pod, and not the repr of
its dataclasses), so upgrading the operator does not restart pods whose spec did not change.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from swarm_operator.resources import labels
from swarm_operator.spec.rules import PREFIX
from swarm_operator.spec.types import ClusterSpec, GcsFaultTolerance, Probes, Resources, WorkerGroupSpec

REVISION = f"{PREFIX}revision"
TEMPLATE_METADATA = f"{PREFIX}template-metadata"
METADATA_KEYS = ("labels", "annotations")

# Which part of the spec each revision part comes from, for Events and docs/crd.md.
PART_FIELDS = {
    "image": "spec.image",
    "resources": "resources",
    "rayResources": "rayResources",
    "rayStartParams": "rayStartParams",
    "template": "template.spec",
    "gcsFaultTolerance": "spec.faultTolerance.gcs",
    "probes": "probes",
    "auth": "spec.auth",
}
# How long a deletion waits for the Redis key cleanup restarts nothing.
NOT_IN_PODS = frozenset({"cleanup_timeout_seconds"})


def _resources(res: Resources) -> dict[str, Any]:
    # What Kubernetes and Ray are told, as text: independent of how spec/ holds it.
    out: dict[str, Any] = {"cpu": res.cpu_text, "memory": res.memory_text}
    if res.gpu:
        out[res.gpu_resource_name] = res.gpu
    out.update(res.hash_extras())  # requests, limits, accelerator, rayCpus: only those given
    return out


def _with_probes(parts: dict[str, Any], probes: Probes) -> dict[str, Any]:
    # A part only when overridden: clusters without overrides keep their hashes.
    if probes.hash_extras():
        parts["probes"] = probes.hash_extras()
    return parts


def _gcs(gcs: GcsFaultTolerance | None) -> dict[str, Any] | None:
    # Unset options are left out, so a new option does not change existing clusters' hashes.
    if gcs is None:
        return None
    return {k: v for k, v in sorted(asdict(gcs).items()) if v not in (None, "", False) and k not in NOT_IN_PODS}


def _with_auth(parts: dict[str, Any], cluster: ClusterSpec) -> dict[str, Any]:
    # Only when set: clusters without token authentication keep the hashes they had before it existed.
    if cluster.auth is not None:
        parts["auth"] = {"mode": cluster.auth.mode, "secret": cluster.auth.secret_name, "key": cluster.auth.secret_key}
    return parts


def _template_spec(template: Mapping[str, Any]) -> Any:
    return template.get("spec") or {}


def head_parts(cluster: ClusterSpec) -> dict[str, Any]:
    h = cluster.head
    return _with_auth(_with_probes({"image": cluster.image, "resources": _resources(h.resources),
                                    "rayStartParams": dict(h.ray_start_params), "template": _template_spec(h.template),
                                    "gcsFaultTolerance": _gcs(cluster.fault_tolerance.gcs)}, h.probes), cluster)


def worker_parts(cluster: ClusterSpec, group: WorkerGroupSpec) -> dict[str, Any]:
    parts = _with_auth(_with_probes({"image": cluster.image, "resources": _resources(group.resources),
                                     "rayResources": dict(group.ray_resources),
                                     "rayStartParams": dict(group.ray_start_params),
                                     "template": _template_spec(group.template),
                                     "gcsFaultTolerance": _gcs(cluster.fault_tolerance.gcs)}, group.probes), cluster)
    if group.termination_grace_period_seconds is not None:  # only when set: pods made before the field stay
        parts["terminationGracePeriodSeconds"] = group.termination_grace_period_seconds
    return parts


def part_hashes(parts: Mapping[str, Any]) -> dict[str, str]:
    return {name: labels.template_hash(value) for name, value in parts.items()}


def revision_hash(parts: Mapping[str, Any]) -> str:
    """The pod's template hash: a change to any part means the pod must be replaced."""
    return labels.template_hash(part_hashes(parts))


def template_metadata(template: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """The labels and annotations a pod template asks for (patched in place when only they change)."""
    meta = template.get("metadata") or {}
    return {key: {str(k): str(v) for k, v in (meta.get(key) or {}).items()} for key in METADATA_KEYS}


def metadata_record(template: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """Which labels and annotations the template set, each with a short hash of its value: the record
    tells what to update or remove later, and stays small (copying the values could double a pod's
    annotations past the API server's 256 KiB limit)."""
    return {key: {k: labels.template_hash(v) for k, v in values.items()}
            for key, values in template_metadata(template).items()}


def revision_annotations(parts: Mapping[str, Any], template: Mapping[str, Any]) -> dict[str, str]:
    """The annotations that record what a new pod was built from."""
    return {REVISION: json.dumps(part_hashes(parts), sort_keys=True, separators=(",", ":")),
            TEMPLATE_METADATA: json.dumps(metadata_record(template), sort_keys=True, separators=(",", ":"))}


def read_json_annotation(annotations: Mapping[str, Any], key: str) -> dict[str, Any] | None:
    """A JSON annotation we wrote; None when absent or not ours (a user edit, an older operator)."""
    text = annotations.get(key)
    if not isinstance(text, str):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def changed_parts(recorded: Mapping[str, Any] | None, parts: Mapping[str, Any]) -> list[str]:
    """The parts whose hash differs from what the pod recorded; [] when it recorded nothing."""
    if recorded is None:
        return []
    wanted = part_hashes(parts)
    # A part may be absent on either side (probes without overrides are no part).
    return [name for name in dict.fromkeys([*wanted, *recorded]) if recorded.get(name) != wanted.get(name)]


def describe_change(changed: list[str]) -> str:
    """"image and rayStartParams changed" — or, for a pod without a record, that its template did."""
    if not changed:
        return "its pod template changed (a pod without a revision record, made by an older operator)"
    names = [PART_FIELDS.get(c, c) for c in changed]
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return f"{listed} changed"


def metadata_patch(applied: Mapping[str, Any] | None, template: Mapping[str, Any],
                   operator_labels: Mapping[str, str]) -> dict[str, Any] | None:
    """A merge patch that brings a pod's template labels/annotations up to date, or None when they are.

    Keys the template no longer has are removed only when the pod recorded that the template set them
    (a label someone else added by hand is left alone). The operator's own labels and annotations are
    never touched: the overlay lets the operator's win, and so does this patch.
    """
    def ours(key: str, name: str) -> bool:
        return name.startswith(PREFIX) or (key == "labels" and name in operator_labels)

    wanted, record = template_metadata(template), metadata_record(template)
    if applied is not None and all(applied.get(k) == record[k] for k in METADATA_KEYS):
        return None
    before = applied or {}
    meta: dict[str, Any] = {}
    for key in METADATA_KEYS:
        old = before.get(key) if isinstance(before.get(key), dict) else {}
        assert isinstance(old, dict)
        change: dict[str, Any] = {k: None for k in old if k not in wanted[key] and not ours(key, k)}
        change.update({k: v for k, v in wanted[key].items() if old.get(k) != record[key][k] and not ours(key, k)})
        if change:
            meta[key] = change
    meta.setdefault("annotations", {})[TEMPLATE_METADATA] = json.dumps(record, sort_keys=True, separators=(",", ":"))
    return {"metadata": meta}
