"""What a kubelet derives from a pod spec before it starts a container. Pure: no I/O.

- ``$(VAR)`` expansion with Kubernetes' exact rules (``$$`` escapes; an unknown
  reference stays as written),
- the container environment: ``envFrom``, then ``env`` with ``value``, ``fieldRef``,
  ``resourceFieldRef``, ``secretKeyRef``, ``configMapKeyRef``,
- quantities, for ``resourceFieldRef``,
- the files of ``downwardAPI`` volumes and of ``projected`` volume sources, and when a
  projected service-account token is due for renewal.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

# kind ("Secret" | "ConfigMap"), name → the object's data decoded to text, or None when it does not exist.
Lookup = Callable[[str, str], Mapping[str, str] | None]


class ConfigError(Exception):
    """The container cannot be configured yet (a referenced Secret or key is missing).

    A kubelet reports this as ``CreateContainerConfigError`` and retries: the object
    may appear later.
    """


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion (k8s.io/kubernetes third_party/forked/golang/expansion)."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] != "$" or i + 1 == len(text):
            out.append(text[i])
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "(":
            end = text.find(")", i + 2)
            if end < 0:
                out.append("$(")
                i += 2
            else:
                name = text[i + 2:end]
                out.append(env.get(name, f"$({name})"))
                i = end + 1
        else:
            out.append("$" + nxt)
            i += 2
    return "".join(out)


_SUFFIX: dict[str, int | Decimal] = {
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"),
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+)((?:[eE][+-]?[0-9]+)|Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|)$")


def quantity(text: str) -> Decimal:
    """A Kubernetes quantity ("500m", "1Gi", "2e3") as a number."""
    m = _QUANTITY.match(text.strip())
    if not m:
        raise ValueError(f"not a quantity: {text!r}")
    try:
        number = Decimal(m.group(1))
    except InvalidOperation:
        raise ValueError(f"not a quantity: {text!r}") from None
    suffix = m.group(2)
    if suffix[:1] in ("e", "E"):
        return number * Decimal(10) ** int(suffix[1:])
    return number * Decimal(_SUFFIX.get(suffix, 1))


def field_value(pod: Mapping[str, Any], path: str) -> str:
    """The downward-API fields a kubelet supports in ``env[].valueFrom.fieldRef``."""
    meta = pod.get("metadata", {})
    status = pod.get("status", {})
    spec = pod.get("spec", {})
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.hostIP": status.get("hostIP"),
        "status.podIP": status.get("podIP"),
        "status.hostIPs": ",".join(a["ip"] for a in status.get("hostIPs") or []),
        "status.podIPs": ",".join(a["ip"] for a in status.get("podIPs") or []),
    }
    if path in simple:
        return str(simple[path] or "")
    m = re.fullmatch(r"metadata\.(labels|annotations)\['([^']*)'\]", path)
    if m:
        return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
    raise ConfigError(f"unsupported fieldRef {path!r}")


def resource_value(container: Mapping[str, Any], ref: Mapping[str, Any], node_allocatable: Mapping[str, str]) -> str:
    """``resourceFieldRef``: the container's request or limit (a missing limit is the node's allocatable),
    divided by the divisor and rounded up, as the kubelet does."""
    kind, _, name = ref["resource"].partition(".")
    resources = container.get("resources") or {}
    raw = (resources.get(kind) or {}).get(name)
    if raw is None:
        raw = node_allocatable.get(name, "0") if kind == "limits" else "0"
    divisor = quantity(str(ref.get("divisor") or "1"))
    return str(math.ceil(quantity(str(raw)) / divisor))


def _key(kind: str, ref: Mapping[str, Any], lookup: Lookup) -> str | None:
    data = lookup(kind, ref["name"])
    optional = bool(ref.get("optional"))
    if data is None:
        if optional:
            return None
        raise ConfigError(f'{kind.lower()} "{ref["name"]}" not found')
    if ref["key"] not in data:
        if optional:
            return None
        raise ConfigError(f'couldn\'t find key {ref["key"]} in {kind} {ref["name"]}')
    return data[ref["key"]]


_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


def container_env(pod: Mapping[str, Any], container: Mapping[str, Any], lookup: Lookup,
                  node_allocatable: Mapping[str, str]) -> dict[str, str]:
    """The environment Kubernetes gives the container: envFrom first, env after (later wins);
    each ``value`` is expanded against the variables defined before it."""
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        for kind, field in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            ref = source.get(field)
            if ref is None:
                continue
            data = lookup(kind, ref["name"])
            if data is None:
                if ref.get("optional"):
                    continue
                raise ConfigError(f'{kind.lower()} "{ref["name"]}" not found')
            for k, v in data.items():
                if _ENV_NAME.match(prefix + k):
                    env[prefix + k] = v
    for var in container.get("env") or []:
        name = var["name"]
        if "valueFrom" not in var:
            env[name] = expand(var.get("value", ""), env)
            continue
        source = var["valueFrom"]
        value: str | None
        if "fieldRef" in source:
            value = field_value(pod, source["fieldRef"]["fieldPath"])
        elif "resourceFieldRef" in source:
            value = resource_value(container, source["resourceFieldRef"], node_allocatable)
        elif "secretKeyRef" in source:
            value = _key("Secret", source["secretKeyRef"], lookup)
        elif "configMapKeyRef" in source:
            value = _key("ConfigMap", source["configMapKeyRef"], lookup)
        else:
            raise ConfigError(f"env {name}: unsupported valueFrom {sorted(source)}")
        if value is not None:
            env[name] = value
    return env


def command_line(container: Mapping[str, Any], env: Mapping[str, str]) -> list[str]:
    """command + args with ``$(VAR)`` expanded. There is no image, so no entrypoint to fall back on:
    a container without ``command`` runs its ``args``."""
    argv = [expand(a, env) for a in [*(container.get("command") or []), *(container.get("args") or [])]]
    if not argv:
        raise ConfigError(f"container {container['name']!r} has neither command nor args: "
                          "process nodes run no images, so there is no entrypoint to use")
    return argv


def container_port(container: Mapping[str, Any], port: int | str) -> int:
    """A probe's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    if port.isdigit():
        return int(port)
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return int(p["containerPort"])
    raise ValueError(f"container {container['name']!r} has no port named {port!r}")


def downward_value(pod: Mapping[str, Any], item: Mapping[str, Any], node_allocatable: Mapping[str, str]) -> str:
    """One file of a downwardAPI volume: a field (``metadata.labels``/``annotations`` whole, one
    ``key="value"`` line each, sorted, as a kubelet writes them) or a container's resource."""
    if "fieldRef" in item:
        path = item["fieldRef"]["fieldPath"]
        meta = pod.get("metadata", {})
        if path in ("metadata.labels", "metadata.annotations"):
            values = meta.get(path.split(".", 1)[1]) or {}
            return "\n".join(f'{k}="{v}"' for k, v in sorted(values.items()))
        return field_value(pod, path)
    if "resourceFieldRef" in item:
        ref = item["resourceFieldRef"]
        spec = pod.get("spec", {})
        containers = [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]
        container = next((c for c in containers if c["name"] == ref.get("containerName")), None)
        if container is None:
            raise ConfigError(f"downwardAPI {item.get('path')}: no container {ref.get('containerName')!r}")
        return resource_value(container, ref, node_allocatable)
    raise ConfigError(f"downwardAPI {item.get('path')}: neither fieldRef nor resourceFieldRef")


def token_refresh_at(issued: float, expires: float) -> float:
    """When a projected service-account token is renewed: at 80 % of its lifetime, or 24 h after it
    was issued if that comes first (a kubelet's rule; the API server may hand out tokens valid far
    longer than asked, and the file must still turn over)."""
    return min(issued + 0.8 * (expires - issued), issued + 24 * 3600)


def decode_secret(data: dict[str, str] | None, string_data: dict[str, str] | None = None) -> dict[str, str]:
    """A Secret's ``data`` (base64) as text."""
    out = {k: base64.b64decode(v).decode(errors="replace") for k, v in (data or {}).items()}
    out.update(string_data or {})
    return out
