"""The watch cache under random interleavings (hypothesis).

A small model API server makes pods (few names, so names are reused by new pods), changes,
deletes gracefully or at once, and takes lists. What it reports reaches the cache in any order:
watch events in order but late (some lost, as a broken watch loses them), the answers to creates
and deletes at any later moment, lists at any later moment. After every delivery the cache must
hold no pod it has been told is deleted, and must hold the newest pod of each name it has been told
exists (unless told that one is deleted too).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from swarm_operator.kit.cache import ChildStore, Key
from swarm_operator.resources import labels
from tests.unit.operator_fixtures import NAMESPACE

KEY: Key = (NAMESPACE, "demo")
NAMES = ("demo-head", "demo-cpu-a", "demo-cpu-b")


def pod(name: str, uid: str, rv: int | None, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": NAMESPACE, "uid": uid, "labels": {labels.CLUSTER: "demo"}}
    if rv is not None:
        meta["resourceVersion"] = str(rv)
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta}


@dataclass
class Model:
    """The API server, what is in flight to the cache, and what the cache has been told."""

    rv: int = 100
    live: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> the pod as stored now
    created_at: dict[str, int] = field(default_factory=dict)  # uid -> creation revision
    name_of: dict[str, str] = field(default_factory=dict)  # uid -> name
    deleted_at: dict[str, int] = field(default_factory=dict)  # uid -> removal revision
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # the watch stream, not yet delivered
    answers: list[tuple[str, Any]] = field(default_factory=list)  # ("object", pod) | ("gone", (name, uid))
    lists: list[tuple[int, list[dict[str, Any]]]] = field(default_factory=list)
    told: set[str] = field(default_factory=set)  # uids the cache was told exist(ed)
    told_deleted: set[str] = field(default_factory=set)
    # Deletions told with a version (a DELETED event): they also date the name's earlier pods as gone.
    told_deleted_in_order: set[str] = field(default_factory=set)

    def bump(self) -> int:
        self.rv += 1
        return self.rv

    # -- the server --------------------------------------------------------------------------------

    def create(self, name: str) -> None:
        if name in self.live:
            return
        rv = self.bump()
        uid = f"uid-{rv}"
        self.created_at[uid], self.name_of[uid] = rv, name
        self.live[name] = pod(name, uid, rv)
        self.events.append(("ADDED", self.live[name]))
        self.answers.append(("object", self.live[name]))

    def modify(self, name: str) -> None:
        if name in self.live:
            old = self.live[name]["metadata"]
            self.live[name] = pod(name, old["uid"], self.bump(), "deletionTimestamp" in old)
            self.events.append(("MODIFIED", self.live[name]))

    def delete_gracefully(self, name: str) -> None:
        if name in self.live:
            self.live[name] = pod(name, self.live[name]["metadata"]["uid"], self.bump(), deleting=True)
            self.events.append(("MODIFIED", self.live[name]))
            self.answers.append(("object", self.live[name]))

    def remove(self, name: str, answered: bool) -> None:
        """The pod goes (its grace period ended, or it is deleted at once: then the answer has no version)."""
        if name not in self.live:
            return
        uid = self.live.pop(name)["metadata"]["uid"]
        self.deleted_at[uid] = rv = self.bump()
        self.events.append(("DELETED", pod(name, uid, rv)))
        if answered:
            self.answers.append(("gone", (name, uid)))

    def delete_again(self, index: int) -> None:
        """A delete of a pod already gone (the cache had not heard yet): 404."""
        gone = sorted(self.deleted_at)
        if gone:
            uid = gone[index % len(gone)]
            self.answers.append(("gone", (self.name_of[uid], uid)))

    def take_list(self) -> None:
        self.lists.append((self.rv, [dict(p) for p in self.live.values()]))

    # -- what the cache learns ---------------------------------------------------------------------

    def learn_exists(self, uid: str) -> None:
        self.told.add(uid)

    def learn_list(self, at: int, items: list[dict[str, Any]]) -> None:
        held = {p["metadata"]["uid"] for p in items}
        self.told |= held
        self.told_deleted |= {uid for uid, rv in self.deleted_at.items() if rv <= at}

    def deleted_as_told(self) -> set[str]:
        """Told deleted, or a later pod of the same name was told to exist, or told deleted by an event
        (names are unique at a time: the earlier one was gone by then; a 404 carries no version to say so)."""
        out = set(self.told_deleted)
        for uid in self.told | self.told_deleted_in_order:
            out |= {other for other in self.name_of if self.name_of[other] == self.name_of[uid]
                    and self.created_at[other] < self.created_at[uid]}
        return out


def check(cache: ChildStore, m: Model) -> None:
    deleted = m.deleted_as_told()
    held = {o["metadata"]["name"]: o["metadata"]["uid"] for o in cache.objects(KEY)}
    resurrected = {name: uid for name, uid in held.items() if uid in deleted}
    assert not resurrected, f"the cache holds pods it was told are deleted: {resurrected}"
    for name in NAMES:
        told = [uid for uid in m.told if m.name_of[uid] == name]
        if not told:
            continue
        newest = max(told, key=m.created_at.__getitem__)
        if newest not in deleted:
            assert held.get(name) == newest, f"lost live pod {name} ({newest}); the cache holds {held.get(name)}"


STEPS = st.lists(st.tuples(st.sampled_from(["create", "modify", "delete", "remove", "remove-now", "delete-again",
                                            "list", "event", "event", "event", "lose-event", "answer", "answer",
                                            "relist"]),
                           st.integers(min_value=0, max_value=50)), min_size=20, max_size=80)


@settings(max_examples=500, deadline=None)
@given(STEPS)
def test_the_cache_never_resurrects_a_deleted_pod_nor_loses_a_live_one(steps: list[tuple[str, int]]) -> None:
    m = Model()
    cache = ChildStore(labels.CLUSTER)
    for op, n in steps:
        name = NAMES[n % len(NAMES)]
        if op == "create":
            m.create(name)
        elif op == "modify":
            m.modify(name)
        elif op == "delete":
            m.delete_gracefully(name)
        elif op in ("remove", "remove-now"):
            m.remove(name, answered=op == "remove-now")
        elif op == "delete-again":
            m.delete_again(n)
        elif op == "list":
            m.take_list()
        elif op in ("event", "lose-event") and m.events:
            event_type, obj = m.events.pop(0)  # a watch delivers in order
            if op == "event":
                cache.apply(event_type, obj)
                uid = obj["metadata"]["uid"]
                if event_type == "DELETED":
                    m.told_deleted.add(uid)
                    m.told_deleted_in_order.add(uid)
                else:
                    m.told.add(uid)
        elif op == "answer" and m.answers:
            kind, what = m.answers.pop(n % len(m.answers))  # answers come back in any order
            if kind == "object":
                cache.apply(None, what)
                m.learn_exists(what["metadata"]["uid"])
            else:
                name_gone, uid = what
                cache.gone(KEY, name_gone, uid)
                m.told_deleted.add(uid)
        elif op == "relist" and m.lists:
            at, items = m.lists.pop(n % len(m.lists))
            cache.merge_list(items, {NAMESPACE: str(at)})
            m.learn_list(at, items)
        else:
            continue
        check(cache, m)
