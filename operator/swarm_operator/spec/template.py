"""Pod template overlays and the head service's annotations, checked as far as the API server would
refuse the objects built from them: label and annotation keys, label values, containers."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from swarm_operator.spec.reader import Reader, show
from swarm_operator.spec.rules import (
    DNS_LABEL,
    ENV_NAME,
    IMAGE,
    LABEL_VALUE,
    MAX_ANNOTATIONS_BYTES,
    MAX_SERVICE_ANNOTATIONS,
    OPERATOR_CONTAINER_FIELDS,
    PREFIX,
    QUALIFIED_NAME,
    RAY_CONTAINER,
)


def read_service_annotations(r: Reader, head: Mapping[str, Any]) -> Mapping[str, str]:
    service = r.mapping(head, "service", "spec.head")
    for unknown in sorted(set(service) - {"annotations"}):
        r.fail(f"spec.head.service.{unknown}", "unknown field; the head service takes annotations (its type is "
               "spec.head.serviceType)")
    annotations = r.mapping(service, "annotations", "spec.head.service")
    path = "spec.head.service.annotations"
    if len(annotations) > MAX_SERVICE_ANNOTATIONS:
        r.fail(path, f"must have at most {MAX_SERVICE_ANNOTATIONS} annotations, got {len(annotations)}")
    _string_map(r, annotations, path, label_values=False)
    for key in annotations:
        if isinstance(key, str) and key.startswith(PREFIX):
            r.fail(f"{path}.{key}", f"the {PREFIX} prefix is the operator's")
    size = sum(len(str(k).encode()) + len(v.encode()) for k, v in annotations.items() if isinstance(v, str))
    if size > MAX_ANNOTATIONS_BYTES // 2:
        r.fail(path, f"must be at most {MAX_ANNOTATIONS_BYTES // 2} bytes together, got {size}")
    return MappingProxyType({k: v for k, v in annotations.items() if isinstance(v, str)})


def _qualified_name_ok(key: object) -> bool:
    """A label or annotation key: [prefix/]name, prefix a DNS subdomain ≤ 253, name ≤ 63."""
    if not isinstance(key, str):
        return False
    m = QUALIFIED_NAME.fullmatch(key)
    if m is None:
        return False
    return len(m.group(6)) <= 63 and len(m.group(2) or "") <= 253


def _string_map(r: Reader, values: Mapping[str, Any], path: str, *, label_values: bool) -> None:
    """Labels or a node selector (label_values) or annotations: keys qualified names, values strings."""
    for k, v in values.items():
        if not isinstance(v, str):
            r.fail(f"{path}.{k}", f"must be a string, got {show(v)}")
        elif not _qualified_name_ok(k):
            r.fail(f"{path}.{k}", f"key must be a qualified name such as example.com/team (letters, digits, '-', "
                   f"'_', '.'; at most 63 after an optional DNS prefix), got key {show(k)}")
        elif label_values and not (LABEL_VALUE.fullmatch(v) and len(v) <= 63):
            r.fail(f"{path}.{k}", f"must be a label value (at most 63 letters, digits, '-', '_', '.', starting and "
                   f"ending alphanumeric), got {show(v)}")


def _container(r: Reader, item: Mapping[str, Any], cpath: str, *, needs_image: bool) -> None:
    image = item.get("image")
    if (image is not None or needs_image) and not (isinstance(image, str) and IMAGE.fullmatch(image)):
        r.fail(f"{cpath}.image", f"must be an image reference (a sidecar needs one), got {show(image)}")
    # The overlay appends these to the operator's lists; anything else would replace them.
    for field_key in ("env", "envFrom", "volumeMounts", "ports"):
        entries = item.get(field_key)
        if entries is not None and not isinstance(entries, list):
            r.fail(f"{cpath}.{field_key}", f"must be a list, got {show(entries)}")
            continue
        # Entries are merged by their key (name, or containerPort): it must be a plain value.
        merge_key = "containerPort" if field_key == "ports" else "name"
        for j, entry in enumerate(entries or []):
            epath = f"{cpath}.{field_key}[{j}]"
            if not isinstance(entry, Mapping):
                r.fail(epath, f"must be an object, got {show(entry)}")
                continue
            value = entry.get(merge_key)
            if field_key == "envFrom":
                continue
            if not isinstance(value, str | int):
                r.fail(f"{epath}.{merge_key}", f"must be set, got {show(value)}")
            elif field_key == "ports" and (isinstance(value, bool) or not isinstance(value, int)
                                           or not 1 <= value <= 65535):
                r.fail(f"{epath}.{merge_key}", f"must be a port number from 1 to 65535, got {show(value)}")
            elif field_key == "env" and not (isinstance(value, str) and ENV_NAME.fullmatch(value)):
                r.fail(f"{epath}.{merge_key}", f"must be printable ASCII without '=', got {show(value)}")


def read_template(r: Reader, obj: Mapping[str, Any], path: str) -> Mapping[str, Any]:
    """A pod template overlay, checked as far as the pod API would refuse the pods built from it."""
    raw = obj.get("template")
    tpath = f"{path}.template"
    if raw is None:
        return MappingProxyType({})
    if not isinstance(raw, Mapping):
        r.fail(tpath, f"must be a pod template object, got {show(raw)}")
        return MappingProxyType({})
    unknown = sorted(set(raw) - {"metadata", "spec"})
    if unknown:
        r.fail(f"{tpath}.{unknown[0]}", "unknown field; a pod template has only metadata and spec")
    meta = r.mapping(raw, "metadata", tpath)
    _string_map(r, r.mapping(meta, "labels", f"{tpath}.metadata"), f"{tpath}.metadata.labels", label_values=True)
    annotations = r.mapping(meta, "annotations", f"{tpath}.metadata")
    _string_map(r, annotations, f"{tpath}.metadata.annotations", label_values=False)
    size = sum(len(str(k).encode()) + len(v.encode()) for k, v in annotations.items() if isinstance(v, str))
    if size > MAX_ANNOTATIONS_BYTES:
        r.fail(f"{tpath}.metadata.annotations", f"must be at most {MAX_ANNOTATIONS_BYTES} bytes together "
               f"(Kubernetes' limit for a pod), got {size}")
    spec = r.mapping(raw, "spec", tpath)
    for list_key in ("containers", "initContainers", "volumes", "tolerations", "imagePullSecrets"):
        items = spec.get(list_key)
        if items is None:
            continue
        lpath = f"{tpath}.spec.{list_key}"
        if not isinstance(items, list):
            r.fail(lpath, f"must be a list, got {show(items)}")
            continue
        for i, item in enumerate(items):
            if not isinstance(item, Mapping):
                r.fail(f"{lpath}[{i}]", f"must be an object, got {show(item)}")
            elif list_key in ("containers", "initContainers", "volumes") and not (
                isinstance(item.get("name"), str) and DNS_LABEL.fullmatch(item["name"])
            ):
                r.fail(f"{lpath}[{i}].name", f"must be a DNS label, got {show(item.get('name'))}")
            elif list_key in ("containers", "initContainers"):
                # The Ray container is the one named "ray"; every other one is a sidecar and needs an image.
                is_ray = list_key == "containers" and item.get("name") == RAY_CONTAINER
                _container(r, item, f"{lpath}[{i}]", needs_image=not is_ray)
                for owned in (sorted(set(item) & set(OPERATOR_CONTAINER_FIELDS)) if is_ray else ()):
                    r.fail(f"{lpath}[{i}].{owned}", f"is set by the operator: {OPERATOR_CONTAINER_FIELDS[owned]}")
    _string_map(r, r.mapping(spec, "nodeSelector", f"{tpath}.spec"), f"{tpath}.spec.nodeSelector", label_values=True)
    return MappingProxyType(dict(raw))
