"""The watch cache: what the operator knows of the objects it serves and of their children. No I/O.

Three sources feed it, in any order: watch events, the answers to the operator's own creates and
deletes (written through at once, so two quick turns never create the same pod twice), and
re-lists (snapshots taken at some earlier resourceVersion). resourceVersions are etcd revisions,
so an older report never replaces a newer one; a deletion leaves a tombstone, so neither a late
answer, a late event nor a list taken before the deletion puts a deleted object back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

Key = tuple[str, str]  # (namespace, name) of a served object
# Metadata a turn depends on; resourceVersion and managedFields change with every write.
ECHO_METADATA = ("uid", "generation", "deletionTimestamp", "finalizers", "labels", "annotations")
TOMBSTONES = 10000  # remembered deletions per kind; far more than can be in flight at once


def newer(candidate: Mapping[str, Any], current: Mapping[str, Any] | None, *, strictly: bool = False) -> bool:
    """Whether `candidate` is at least as new as `current`; without comparable versions, assume so."""
    if current is None:
        return True
    a = _version(candidate)
    b = _version(current)
    if a.isdigit() and b.isdigit():
        return int(a) > int(b) if strictly else int(a) >= int(b)
    return True


def owner_key(obj: Mapping[str, Any], owner_label: str) -> Key | None:
    """The served object a child belongs to, by the label that names its owner in the same namespace."""
    meta = obj.get("metadata") or {}
    owner = (meta.get("labels") or {}).get(owner_label)
    if not owner or not meta.get("namespace"):
        return None
    return (meta["namespace"], owner)


def _version(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def _at(resource_version: str) -> dict[str, Any]:
    return {"metadata": {"resourceVersion": resource_version}}


def _uid(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("uid") or "")


@dataclass(frozen=True)
class _Tombstone:
    resource_version: str  # the newest deletion's (or the list's that showed it gone); "" when unknown
    uids: frozenset[str]  # the deleted objects' of this name; a uid never comes back, whatever its version


class ChildStore:
    """One kind of child (pods, services), by its owner's key and its name; `owner_label` names the owner."""

    def __init__(self, owner_label: str, keep: Callable[[Mapping[str, Any]], dict[str, Any]] = dict) -> None:
        self._owner_label = owner_label
        self._keep = keep  # what of an object to store (pods are slimmed)
        self._by_key: dict[Key, dict[str, dict[str, Any]]] = {}
        self._tombstones: dict[tuple[Key, str], _Tombstone] = {}  # insertion-ordered: oldest first
        # The newest re-list per namespace (None: all): its resourceVersion and what it held. Anything of
        # that version or older it did not hold was gone by then, even if the cache never had it.
        self._lists: dict[str | None, tuple[str, frozenset[tuple[Key, str]]]] = {}

    # -- reads -------------------------------------------------------------------------------------

    def get(self, key: Key, name: str) -> dict[str, Any] | None:
        return self._by_key.get(key, {}).get(name)

    def names(self, key: Key) -> set[str]:
        return set(self._by_key.get(key, {}))

    def objects(self, key: Key) -> list[dict[str, Any]]:
        return list(self._by_key.get(key, {}).values())

    # -- writes ------------------------------------------------------------------------------------

    def apply(self, event_type: str | None, obj: Mapping[str, Any]) -> Key | None:
        """A watch event, a listed object (type None) or a create/delete answer carrying a version.
        Returns the owner's key when the cache changed."""
        key = owner_key(obj, self._owner_label)
        if key is None:
            return None
        name = obj["metadata"]["name"]
        current = self.get(key, name)
        if not newer(obj, current):
            return None  # older than what the cache holds
        if event_type == "DELETED":
            self._by_key.get(key, {}).pop(name, None)
            self._bury(key, name, _version(obj), _uid(obj) or _uid(current or {}))
            return key
        if self._buried(key, name, obj):
            if current is not None and _uid(current) and _uid(current) != _uid(obj):
                # A newer pod of this name existed after the held one: names are unique at a time, so
                # the held one is gone too, though its deletion was never reported.
                self._by_key[key].pop(name)
                self._bury(key, name, _version(obj), _uid(current))
                return key
            return None
        self._by_key.setdefault(key, {})[name] = self._keep(obj)
        return key

    def gone(self, key: Key, name: str, uid: str = "") -> bool:
        """The API says the object is gone (a delete answered 404, or with no version to compare):
        forget it, unless the cache already holds a newer object of that name (another uid)."""
        current = self.get(key, name)
        if current is not None and uid and _uid(current) and _uid(current) != uid:
            # Another pod of that name is held: keep it, but the gone one's late ADDED or answer must not
            # bring it back (found by the property test: a 404 arriving before the pod's own create answer).
            old = self._tombstones.get((key, name))
            self._bury(key, name, old.resource_version if old else "", uid)
            return False
        if current is not None:
            self._by_key[key].pop(name)
        # Even when the cache has not heard of it yet: its ADDED event may still be on the way.
        self._bury(key, name, _version(current or {}), uid or _uid(current or {}))
        return current is not None

    def drop_key(self, key: Key) -> None:
        self._by_key.pop(key, None)

    def merge_list(self, listed: Iterable[Mapping[str, Any]], listed_at: Mapping[str | None, str]) -> set[Key]:
        """Merge a re-list; `listed_at` holds each listed namespace's (None: all) resourceVersion.
        Keeps what is newer than the list (written or watched while it ran), drops what the list
        shows gone, and never lets the list bring back what was deleted meanwhile. Returns the
        owner keys whose contents changed."""
        fresh: dict[Key, dict[str, Mapping[str, Any]]] = {}
        for obj in listed:
            key = owner_key(obj, self._owner_label)
            if key is not None:
                fresh.setdefault(key, {})[obj["metadata"]["name"]] = obj
        changed: set[Key] = set()
        for key in set(self._by_key) | set(fresh):
            if key[0] not in listed_at and None not in listed_at:
                continue  # not in the listed namespaces
            list_rv = listed_at.get(key[0], listed_at.get(None, ""))
            at = _at(list_rv)
            cached = self._by_key.get(key, {})
            merged = {name: self._keep(obj) for name, obj in fresh.get(key, {}).items()
                      if not self._buried(key, name, obj)}
            for name, obj in cached.items():
                if name in merged:
                    if newer(obj, merged[name]):
                        merged[name] = obj
                elif newer(obj, at) and not newer(at, obj):
                    merged[name] = obj  # created after the list was taken: dropping it would let a turn duplicate it
                else:
                    # The list, taken after this version, no longer has it: deleted unseen. The tombstone
                    # stops a late event of that object from bringing it back.
                    self._bury(key, name, list_rv, _uid(obj))
            if merged != cached:
                changed.add(key)
                if merged:
                    self._by_key[key] = merged
                else:
                    self._by_key.pop(key, None)
        for scope, list_rv in listed_at.items():
            if newer(_at(list_rv), _at(self._lists.get(scope, ("", frozenset()))[0])):
                self._lists[scope] = (list_rv, frozenset((k, n) for k, objs in fresh.items()
                                                         if scope in (None, k[0]) for n in objs))
        return changed

    # -- tombstones --------------------------------------------------------------------------------

    def _bury(self, key: Key, name: str, resource_version: str, uid: str) -> None:
        old = self._tombstones.pop((key, name), _Tombstone("", frozenset()))  # re-inserted last: evicted last
        if not resource_version or (old.resource_version and newer(_at(old.resource_version), _at(resource_version))):
            resource_version = old.resource_version  # the newest deletion of the name bounds what may come back
        self._tombstones[(key, name)] = _Tombstone(resource_version, old.uids | {uid} if uid else old.uids)
        while len(self._tombstones) > TOMBSTONES:
            self._tombstones.pop(next(iter(self._tombstones)))

    def _buried(self, key: Key, name: str, obj: Mapping[str, Any]) -> bool:
        """Whether `obj` is a version of an object already deleted."""
        for scope in (key[0], None):
            list_rv, held = self._lists.get(scope, ("", frozenset()))
            if list_rv and (key, name) not in held and not newer(obj, _at(list_rv), strictly=True):
                return True  # a list taken after this version no longer had it
        tomb = self._tombstones.get((key, name))
        if tomb is None:
            return False
        if _uid(obj) in tomb.uids:
            return True
        # A delete answer carries the deletion's own revision: only a strictly newer object (a new
        # one of the same name) may replace its tombstone.
        return not newer(obj, _at(tomb.resource_version), strictly=True)


class ObjectStore:
    """The objects of one served kind (SwarmClusters, say), by key, as the watch last reported them."""

    def __init__(self) -> None:
        self._objects: dict[Key, dict[str, Any]] = {}

    def get(self, key: Key) -> dict[str, Any] | None:
        return self._objects.get(key)

    def keys(self) -> list[Key]:
        return list(self._objects)

    def bodies(self) -> list[dict[str, Any]]:
        return list(self._objects.values())

    def put(self, key: Key, body: Mapping[str, Any]) -> bool:
        """Store a watch event; whether it brings anything a turn reads that the cache lacked.
        Every status write of ours comes back as an event, and a turn for it (one per write, thousands
        at scale) would find nothing to do. Another writer's status, or any spec or metadata change, counts."""
        cached = self._objects.get(key)
        self._objects[key] = dict(body)
        if cached is None:
            return True
        old, new = cached.get("metadata") or {}, body.get("metadata") or {}
        return (any(old.get(k) != new.get(k) for k in ECHO_METADATA)
                or cached.get("spec") != body.get("spec") or cached.get("status") != body.get("status"))

    def record_status(self, key: Key, status: Mapping[str, Any]) -> None:
        """Our own status write (a merge patch: a None removes its field); the watch confirms it later. Without
        it, the next turn would compare against the old status and write the same thing again."""
        body = self._objects.get(key)
        if body is not None:
            merged = {**(body.get("status") or {}), **status}
            body["status"] = {k: v for k, v in merged.items() if v is not None}

    def drop(self, key: Key) -> None:
        self._objects.pop(key, None)

    def gone_from_list(self, namespace: str | None, listed: Iterable[Mapping[str, Any]],
                       resource_version: str) -> tuple[list[Key], list[dict[str, Any]]]:
        """Compare a list with the cache: which cached objects (in `namespace`, None for all) the list no
        longer has though they are older than it, and which listed ones are unknown."""
        at = _at(resource_version)
        present = {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in listed}
        gone = [k for k, body in self._objects.items()
                if namespace in (None, k[0]) and k not in present and not newer(body, at, strictly=True)]
        unknown = [dict(body) for k, body in present.items() if k not in self._objects]
        return gone, unknown


class WatchCache:
    """One served kind's objects, and the pods, services and PodDisruptionBudgets they own (labelled `owner_label`)."""

    def __init__(self, owner_label: str, slim_pod: Callable[[Mapping[str, Any]], dict[str, Any]] = dict) -> None:
        self.objects = ObjectStore()
        self.pods = ChildStore(owner_label, slim_pod)
        self.services = ChildStore(owner_label)
        self.budgets = ChildStore(owner_label)
