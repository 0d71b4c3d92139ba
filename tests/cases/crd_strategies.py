"""Hypothesis strategies derived from the SwarmCluster CRD's openAPIV3Schema (crds/swarmcluster.yaml).

`in_schema()` walks the schema and draws a value for every node from its own constraints (type,
enum, pattern, bounds, maxLength, maxItems, list-map keys), kept consistent with the CRD's CEL rules
(min ≤ replicas ≤ max, backoff initial ≤ max, name lengths) and small (few groups and replicas), so that
a sample is something the API server accepts and the operator can serve quickly.

`generated()` draws either such a sample, or a sample with ONE field mutated: a value outside that
field's schema (wrong type, out of bounds, over-long, unicode, broken pattern, duplicate list key …) or a
hostile value that the schema allows (a huge quantity, a nanocore). It also says which field paths an
error about it may name (`blame`): the mutated path, its ancestors (list-level and CEL errors name
those), and the fields tied to it by a CEL rule.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Iterator
from typing import Any

from hypothesis import strategies as st

from tests.cases.crd_schema import ROOT, re2_to_python
from tests.cases.invalid_manifests import get_path, set_path

SPEC: dict[str, Any] = ROOT["properties"]["spec"]
GROUP_NODE: dict[str, Any] = SPEC["properties"]["workerGroups"]["items"]
OPERATOR_OWNED_FLAGS = ("block", "address", "head", "num-cpus", "num-gpus", "memory", "resources", "port",
                        "dashboard-host", "dashboard-port", "ray-client-server-port", "metrics-export-port",
                        "redis-password")
BUILTIN_RAY_RESOURCES = ("CPU", "GPU", "memory", "object_store_memory")
MAX_GROUPS_DRAWN = 3  # the schema allows 16; a served sample creates its pods, so keep it small
MAX_REPLICAS_DRAWN = 3
MAX_LIST_ITEMS_DRAWN = 3

# Pod template overlays (the schema preserves unknown fields there, so it cannot describe them).
VALID_TEMPLATES: tuple[dict[str, Any], ...] = (
    {},
    {"metadata": {"labels": {"team": "vision"}, "annotations": {"note": "日本語 ✓"}}},
    {"spec": {"nodeSelector": {"kubernetes.io/os": "linux"}}},
    {"spec": {"tolerations": [{"key": "example.com/spot", "operator": "Exists", "effect": "NoSchedule"}]}},
    {"spec": {"containers": [{"name": "ray", "env": [{"name": "DEBUG", "value": "1"}]}]}},
    {"spec": {"containers": [{"name": "ray"}, {"name": "logs", "image": "busybox:1.36",
                                               "command": ["sh", "-c", "sleep 1d"]}]}},
    {"spec": {"volumes": [{"name": "scratch", "emptyDir": {}}],
              "containers": [{"name": "ray", "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]}]}},
)
# Overlays only the operator can reject, each with the path (below ".template") its error names.
INVALID_TEMPLATES: tuple[tuple[dict[str, Any], str], ...] = (
    ({"spec": {"containers": "ray"}}, ".spec.containers"),
    ({"spec": {"containers": [{"image": "busybox"}]}}, ".spec.containers[0].name"),
    ({"metadata": {"labels": {"team": "a b"}}}, ".metadata.labels.team"),
    ({"metadata": {"annotations": {"blob": "x" * (300 * 1024)}}}, ".metadata.annotations"),
    ({"spec": {"nodeSelector": {"pool": 7}}}, ".spec.nodeSelector.pool"),
    ({"spec": {"containers": [{"name": "ray", "env": [{"name": "A=B", "value": "1"}]}]}},
     ".spec.containers[0].env[0].name"),
    ({"spec": {"containers": [{"name": "ray", "ports": [{"containerPort": 0}]}]}},
     ".spec.containers[0].ports[0].containerPort"),
    ({"spec": {"containers": [{"name": "ray"}, {"name": "sidecar"}]}}, ".spec.containers[1].image"),
    ({"kind": "Pod"}, ".kind"),
)

# --- in-schema values --------------------------------------------------------------------------------

QUANTITY_SUFFIXES = ("", "m", "k", "M", "G", "Ki", "Mi", "Gi")
quantities = st.one_of(
    st.integers(1, 64),
    st.builds(lambda n, s: f"{n}{s}", st.integers(1, 999), st.sampled_from(QUANTITY_SUFFIXES)),
    st.builds(lambda a, b, s: f"{a}.{b}{s}", st.integers(0, 9), st.integers(1, 9), st.sampled_from(("", "Gi"))),
    st.builds(lambda e: f"1e{e}", st.integers(0, 12)),
)


def _text_for(node: dict[str, Any]) -> st.SearchStrategy[str]:
    if "enum" in node:
        return st.sampled_from(node["enum"])
    lo, hi = node.get("minLength", 0), min(node.get("maxLength", 40), 40)
    if "pattern" in node:
        max_len = node.get("maxLength", 10**9)
        return st.from_regex(re2_to_python(node["pattern"]), fullmatch=True).filter(lambda s: len(s) <= max_len)
    return st.text(min_size=lo, max_size=hi)


def _number_for(node: dict[str, Any]) -> st.SearchStrategy[Any]:
    lo, hi = node.get("minimum"), node.get("maximum")
    if node.get("type") == "integer":
        return st.integers(int(lo if lo is not None else -(2**31)), int(hi if hi is not None else 2**31))
    if node.get("multipleOf") == 1:
        return st.integers(int(lo or 0), int(hi if hi is not None else 2**31))
    floats = st.floats(lo, hi, allow_nan=False, allow_infinity=False)
    # Whole numbers as plain integers: a float like 2.0 is a different JSON text than what we meant.
    return floats.map(lambda f: int(f) if f.is_integer() else f)


def from_schema(node: dict[str, Any]) -> st.SearchStrategy[Any]:
    """A value valid for `node` alone (its own constraints); objects get each optional property or not."""
    if node.get("x-kubernetes-int-or-string"):
        return quantities
    if node.get("x-kubernetes-preserve-unknown-fields"):
        return st.sampled_from(VALID_TEMPLATES)
    kind = node.get("type")
    if kind == "string":
        return _text_for(node)
    if kind in ("integer", "number"):
        return _number_for(node)
    if kind == "boolean":
        return st.booleans()
    if kind == "array":
        return st.lists(from_schema(node["items"]), max_size=min(node.get("maxItems", 3), MAX_LIST_ITEMS_DRAWN))
    if kind == "object":
        props = node.get("properties", {})
        if props:
            required = set(node.get("required", []))
            return st.fixed_dictionaries({k: from_schema(v) for k, v in props.items() if k in required},
                                         optional={k: from_schema(v) for k, v in props.items() if k not in required})
        if isinstance(node.get("additionalProperties"), dict):
            return st.dictionaries(st.text(min_size=1, max_size=12), from_schema(node["additionalProperties"]),
                                   max_size=min(node.get("maxProperties", 3), 3))
        return st.just({})
    raise ValueError(f"no strategy for schema node {node!r}")


# Map keys the CEL rules constrain.
flag_names = st.from_regex(r"[a-z][a-z0-9-]{0,15}", fullmatch=True).filter(lambda k: k not in OPERATOR_OWNED_FLAGS)
# (TPU, neuron_cores, HPU: a group with those accelerators refuses them in rayResources; only the operator checks)
ray_resource_names = st.text(min_size=1, max_size=16).filter(
    lambda k: k not in BUILTIN_RAY_RESOURCES and k not in ("TPU", "neuron_cores", "HPU"))
EXTENDED_RESOURCES = ("vpc.amazonaws.com/efa", "rdma/hca", "example.com/fpga")


@st.composite
def in_schema_resources(draw: st.DrawFn, node: dict[str, Any]) -> dict[str, Any]:
    """resources as the CEL rules allow them: each of cpu/memory by shorthand, request, limit or both (request
    ≤ limit); extended resources in limits, and in requests only equal to the limit."""
    props = node["properties"]
    res: dict[str, Any] = {}
    for key in ("gpu", "gpuResourceName", "accelerator", "rayCpus"):
        if draw(st.booleans()):
            res[key] = draw(from_schema(props[key]))
    amounts = {  # each list ascending"cpu": ["500m", 1, "1.5", "2"], "memory": ["512Mi", "1Gi", 4294967296],
               "ephemeral-storage": [0, "10Gi", "100G"]}
    for name, values in amounts.items():
        way = draw(st.sampled_from(("none", "shorthand", "request", "limit", "both")))
        low, high = sorted(draw(st.lists(st.sampled_from(range(len(values))), min_size=2, max_size=2)))
        if way == "shorthand" and name != "ephemeral-storage":
            res[name] = values[high]
        if way in ("request", "both"):
            res.setdefault("requests", {})[name] = values[low]
        if way in ("limit", "both"):
            res.setdefault("limits", {})[name] = values[high]
    for name in draw(st.lists(st.sampled_from(EXTENDED_RESOURCES), unique=True, max_size=2)):
        amount = draw(st.integers(0, 8))
        res.setdefault("limits", {})[name] = amount
        if draw(st.booleans()):
            res.setdefault("requests", {})[name] = str(amount)
    return res
group_names = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?", fullmatch=True)


@st.composite
def in_schema_group(draw: st.DrawFn, name: str) -> dict[str, Any]:
    props = GROUP_NODE["properties"]
    group: dict[str, Any] = {"name": name}
    lo = draw(st.integers(0, MAX_REPLICAS_DRAWN))
    hi = draw(st.integers(lo, lo + 5))
    if lo or draw(st.booleans()):
        group["minReplicas"] = lo
    group["maxReplicas"] = hi  # explicit: the default (10) could be below a drawn minReplicas
    if draw(st.booleans()):
        group["replicas"] = draw(st.integers(lo, min(hi, MAX_REPLICAS_DRAWN)))
    if draw(st.booleans()):
        group["resources"] = draw(in_schema_resources(props["resources"]))
    if draw(st.booleans()):
        node = props["rayResources"]["additionalProperties"]
        group["rayResources"] = draw(st.dictionaries(ray_resource_names, _number_for(node), max_size=3))
    if draw(st.booleans()):
        group["rayStartParams"] = draw(st.dictionaries(flag_names, st.text(max_size=20), max_size=3))
    if draw(st.booleans()):
        group["template"] = draw(st.sampled_from(VALID_TEMPLATES))
    return group


@st.composite
def in_schema_spec(draw: st.DrawFn) -> dict[str, Any]:
    props = SPEC["properties"]
    spec: dict[str, Any] = {}
    for key in ("rayVersion", "image", "suspend", "autoscaling", "updateStrategy"):
        if draw(st.booleans()):
            spec[key] = draw(from_schema(props[key]))
    head_props = props["head"]["properties"]
    head: dict[str, Any] = {}
    if draw(st.booleans()):
        head["resources"] = draw(in_schema_resources(head_props["resources"]))
    if draw(st.booleans()):
        head["rayStartParams"] = draw(st.dictionaries(flag_names, st.text(max_size=20), max_size=3))
    if draw(st.booleans()):
        head["serviceType"] = draw(from_schema(head_props["serviceType"]))
    if draw(st.booleans()):
        head["template"] = draw(st.sampled_from(VALID_TEMPLATES))
    spec["head"] = head
    names = draw(st.lists(group_names, max_size=MAX_GROUPS_DRAWN, unique=True))
    spec["workerGroups"] = [draw(in_schema_group(n)) for n in names]
    if draw(st.booleans()):
        ft_props = props["faultTolerance"]["properties"]
        cap = draw(_number_for(ft_props["workerBackoffMaxSeconds"]))
        ft: dict[str, Any] = {"workerBackoffMaxSeconds": cap,
                              "workerBackoffInitialSeconds": draw(st.floats(0, min(cap, 3600)).map(
                                  lambda f: int(f) if f.is_integer() else f))}
        if draw(st.booleans()):
            ft["gcs"] = gcs = draw(from_schema(ft_props["gcs"]))
            if "redisCA" in gcs:  # the CEL rules: TLS only, and the CA from exactly one of a Secret or a ConfigMap
                gcs["redisAddress"] = "rediss://" + gcs["redisAddress"].split("://")[-1]
                gcs["redisCA"].pop(draw(st.sampled_from(["secretName", "configMapName"])), None)
                if not {"secretName", "configMapName"} & gcs["redisCA"].keys():
                    gcs["redisCA"]["secretName"] = "ca"
        spec["faultTolerance"] = ft
    return spec


def manifest_of(spec: dict[str, Any], name: str = "gen") -> dict[str, Any]:
    return {"apiVersion": "swarm.io/v1alpha1", "kind": "SwarmCluster", "metadata": {"name": name}, "spec": spec}


# --- values outside the schema, and hostile values inside it ------------------------------------------

UNICODE_TEXT = ("ü", "名前", "🚀", "cpu\u200b", "\u202egpu", "срu", "a\u0000b", "tab\there", "line\nbreak",
                "\u00a0padded\u00a0")
WRONG_TYPES: tuple[Any, ...] = (True, 7, -1, 0.5, "text", "", [], {}, [1, "two"], {"nested": {"deep": [1]}})
HOSTILE_QUANTITIES = ("1e30", "999999999Ti", "-1", "0", "0m", "NaN", "Infinity", "0x10", "1.5.5", "١", "1 Gi",
                      " 1Gi", "1Gi ", "4GB", "1e-10", "1n", "100T", "1e15", "9223372036854775807", "8Ei", "")


def _hostile_numbers(node: dict[str, Any]) -> list[Any]:
    lo, hi = node.get("minimum"), node.get("maximum")
    out: list[Any] = [2**31, 2**63, -(2**63) - 1, 1e308, -1e308, "1", None]
    if lo is not None:
        out += [lo - 1, lo - 0.5]
    if hi is not None:
        out += [hi + 1, hi * 1000 + 0.5]
    if node.get("type") == "integer":
        out += [0.5, 1.5, -0.25]
    return [v for v in out if v is not None]


def _hostile_strings(node: dict[str, Any]) -> list[Any]:
    out: list[Any] = ["", *UNICODE_TEXT, "x" * (node.get("maxLength", 1000) + 1), " padded ", "UPPER"]
    for value in node.get("enum", []):
        out += [value.lower(), value.upper(), value + " "]
    return out


def hostile_values(node: dict[str, Any], path: str) -> list[Any]:
    """Values to put at a field described by `node`: mostly outside its schema, a few odd ones inside."""
    if path.endswith("resources.cpu") or path.endswith("resources.memory"):
        return [*HOSTILE_QUANTITIES, 0, -5, 10**15, 0.25, True, [1]]
    if node.get("x-kubernetes-preserve-unknown-fields"):
        return ["privileged", [], 42]
    kind = node.get("type")
    if kind in ("integer", "number"):
        return [*_hostile_numbers(node), *WRONG_TYPES]
    if kind == "string":
        return [*_hostile_strings(node), 42, False, ["a"]]
    if kind == "boolean":
        return ["true", "yes", 1, 0, "", [True]]
    if kind == "array":
        return ["list", {"name": "x"}, 7, [[1]]]
    if kind == "object":
        return ["object", [], 3.5, True]
    return list(WRONG_TYPES)


HOSTILE_FLAG_KEYS = ("--object-store-memory", "Num-Cpus", "num-cpus", "address", "ü", "a b", "x" * 300, "-", "9lives")
HOSTILE_RAY_RESOURCE_KEYS = ("GPU", "CPU", "memory", "object_store_memory")


@dataclasses.dataclass(frozen=True)
class Generated:
    manifest: dict[str, Any]
    path: str | None  # the mutated field; None for an in-schema sample
    value: Any = None
    blame: tuple[str, ...] = ()  # field paths an error about this manifest may name

    def describe(self) -> str:
        if self.path is None:
            return "in-schema sample"
        text = repr(self.value)
        return f"{self.path} = {text if len(text) <= 80 else text[:77] + '...'}"


def schema_node(path: str) -> dict[str, Any] | None:
    """The schema node of a concrete path like spec.workerGroups[1].resources.cpu (None if not in the schema)."""
    node: dict[str, Any] | None = ROOT
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        if node is None:
            return None
        if part.startswith("["):
            node = node.get("items")
        elif part in node.get("properties", {}):
            node = node["properties"][part]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            return None
    return node


def leaf_paths(obj: Any, prefix: str) -> Iterator[str]:
    """Every path below `prefix` in `obj` (objects and lists too), in the corpus' path syntax."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if re.fullmatch(r"[^.\[\]]+", key):
                path = f"{prefix}.{key}"
                yield path
                if schema_node(path) is not None and not (schema_node(path) or {}).get(
                        "x-kubernetes-preserve-unknown-fields"):
                    yield from leaf_paths(value, path)
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield f"{prefix}[{i}]"
            yield from leaf_paths(value, f"{prefix}[{i}]")


def ancestors(path: str) -> list[str]:
    """spec.workerGroups[0].resources.cpu → spec.workerGroups[0].resources, spec.workerGroups[0], spec.workerGroups."""
    out = []
    for m in re.finditer(r"[.\[]", path):
        if m.start() > 0:
            out.append(path[: m.start()])
    return [p for p in out if p not in ("spec", "metadata")]


def related(path: str) -> list[str]:
    """Fields a CEL rule ties to `path`, whose error may then name the other one."""
    m = re.fullmatch(r"(spec\.workerGroups\[\d+\])\.(replicas|minReplicas|maxReplicas)", path)
    if m:
        return [f"{m.group(1)}.{f}" for f in ("replicas", "minReplicas", "maxReplicas")]
    if path.startswith("spec.faultTolerance.gcs.redisCA") or path == "spec.faultTolerance.gcs.redisAddress":
        return ["spec.faultTolerance.gcs.redisAddress", "spec.faultTolerance.gcs.redisCA"]
    # requests.x, limits.x and the shorthand x are compared with each other (request ≤ limit, not both).
    m = re.fullmatch(r"(.*\.resources)\.(?:(?:requests|limits)\.)?([^.]+)", path)
    if m:
        return [f"{m.group(1)}.{where}{m.group(2)}" for where in ("requests.", "limits.", "")]
    if path.startswith("spec.faultTolerance.workerBackoff"):
        return ["spec.faultTolerance.workerBackoffInitialSeconds", "spec.faultTolerance.workerBackoffMaxSeconds"]
    if path == "metadata.name" or re.fullmatch(r"spec\.workerGroups\[\d+\]\.name", path):
        return ["metadata.name", "spec.workerGroups"]
    return []


def blame_for(path: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys([path, *ancestors(path), *related(path)]))


MUTATIONS = ("field", "template", "map-key", "duplicate-group", "name")


@st.composite
def mutated_sample(draw: st.DrawFn, kind: str | None = None) -> Generated:
    """A sample with one hostile field; `kind` picks how (one of MUTATIONS), else it is drawn."""
    spec = draw(in_schema_spec())
    manifest = manifest_of(spec)
    choice = kind or draw(st.sampled_from(("field", "template", "map-key", "field", "duplicate-group", "name")))
    groups = spec["workerGroups"]
    if choice in ("duplicate-group", "template", "map-key") and not groups and kind:
        spec["workerGroups"] = groups = [draw(in_schema_group("g"))]
    if choice == "name":
        name = draw(st.sampled_from(("ümlaut", "a" * 46, "1abc", "Upper", "a.b", "a_b", "a" * 254, "-x", "🚀")))
        set_path(manifest, "metadata.name", name)
        return Generated(manifest, "metadata.name", name, blame_for("metadata.name"))
    if choice == "duplicate-group" and groups:
        copy_of = copy.deepcopy(draw(st.sampled_from(groups)))
        spec["workerGroups"] = [*groups, copy_of]
        path = f"spec.workerGroups[{len(groups)}]"
        return Generated(manifest, path, copy_of, (*blame_for(path), f"{path}.name"))
    if choice == "template":
        template, below = draw(st.sampled_from(INVALID_TEMPLATES))
        owner = draw(st.sampled_from(["spec.head", *(f"spec.workerGroups[{i}]" for i in range(len(groups)))]))
        set_path(manifest, f"{owner}.template", copy.deepcopy(template))
        path = f"{owner}.template{below}"
        return Generated(manifest, path, template, blame_for(path))
    if choice == "map-key":
        owner = draw(st.sampled_from(["spec.head", *(f"spec.workerGroups[{i}]" for i in range(len(groups)))]))
        if owner != "spec.head" and draw(st.booleans()):
            key = draw(st.sampled_from(HOSTILE_RAY_RESOURCE_KEYS))
            value: Any = 1
            field = "rayResources"
        else:
            key = draw(st.sampled_from(HOSTILE_FLAG_KEYS))
            value = ""
            field = "rayStartParams"
        params = get_path(manifest, owner).setdefault(field, {})
        params[key] = value
        path = f"{owner}.{field}.{key}"
        return Generated(manifest, path, {key: value}, blame_for(path))
    paths = [p for p in leaf_paths(spec, "spec") if schema_node(p) is not None]
    path = draw(st.sampled_from(paths))
    node = schema_node(path)
    assert node is not None
    value = draw(st.sampled_from(hostile_values(node, path)))
    set_path(manifest, path, copy.deepcopy(value))
    return Generated(manifest, path, value, blame_for(path))


@st.composite
def plain_sample(draw: st.DrawFn) -> Generated:
    manifest = manifest_of(draw(in_schema_spec()))
    return Generated(manifest, None, None, ())


def generated(kind: str | None = None) -> st.SearchStrategy[Generated]:
    """`kind` "in-schema": a sample the CRD accepts; one of MUTATIONS: a sample with one hostile field of that
    kind; None: one in four an in-schema sample, else any mutation."""
    if kind == "in-schema":
        return plain_sample()
    if kind is not None:
        return mutated_sample(kind)
    return st.one_of(plain_sample(), mutated_sample(), mutated_sample(), mutated_sample())
