"""kill -9 the operator at seeded random moments while 50 SwarmClusters are created, scaled and
deleted; after every restart the namespace converges to exactly what the specs (and, with
autoscaling on, the targets in status) say.

The autoscaled clusters have no reachable Ray (fake pods on kwok nodes): the operator reads
nothing from them, so a target it stored in status must survive every restart as it is. The
test writes such targets itself, while the operator is dead, the way the autoscaler persists
them (``status.workerGroups[].desiredReplicas``, a merge patch of the status subresource).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import pytest

from localcluster.operator_process import OperatorProcess
from swarm_operator.resources import labels
from tests.chaos.conftest import OperatorFactory
from tests.chaos.helpers import Api, Model, Want, log_lines, manifest, problems, seed, wait_converged

N_CLUSTERS = 50
KILLS = 24  # at least 20: every cycle kills once, some twice
CREATE_BATCHES = 4  # the 50 clusters are created over the first cycles, with the operator being killed
MAX_REPLICAS = 6


def _name(i: int) -> str:
    return f"c{i:02d}"


def _initial(i: int, rng: random.Random) -> Want:
    groups = {"w": rng.randint(1, 3)}
    if i % 3 == 0:
        groups["x"] = 1
    return Want(groups, autoscaling=i % 5 == 4)


class Chaos:
    """The seeded mutations, applied to the API and to the model in the same step."""

    def __init__(self, api: Api, rng: random.Random) -> None:
        self.api, self.rng = api, rng
        self.model = Model()
        self.created = 0
        self.deleted: list[str] = []  # names free to be created again
        self.log: list[str] = []

    def create(self, i: int) -> None:
        want = _initial(i, self.rng)
        self.api.create(manifest(_name(i), want.groups, autoscaling=want.autoscaling, max_replicas=MAX_REPLICAS))
        self.model.clusters[_name(i)] = want
        self.log.append(f"create {_name(i)} {want}")

    def create_batch(self) -> None:
        end = min(N_CLUSTERS, self.created + -(-N_CLUSTERS // CREATE_BATCHES))
        for i in range(self.created, end):
            self.create(i)
        self.created = end

    def scale(self) -> None:
        """Scale a cluster without autoscaling up by its spec (a lower count would wait for Ray to tell busy
        workers from idle ones, and there is no Ray here)."""
        names = sorted(n for n, w in self.model.clusters.items() if not w.autoscaling)
        if not names:
            return
        name = self.rng.choice(names)
        groups = {g: max(n, self.rng.randint(0, 4)) for g, n in self.model.clusters[name].groups.items()}
        self.api.set_replicas(name, groups)
        self.model.clusters[name].groups.update(groups)
        self.log.append(f"scale {name} {groups}")

    def delete(self) -> None:
        name = self.rng.choice(sorted(self.model.clusters))
        self.api.delete(name)
        del self.model.clusters[name]
        self.deleted.append(name)
        self.log.append(f"delete {name}")

    def recreate(self) -> None:
        """A deleted name comes back as a new cluster: its predecessor's pods may still be there."""
        if not self.deleted:
            return
        name = self.deleted.pop(self.rng.randrange(len(self.deleted)))
        self.create(int(name[1:]))

    def set_target(self) -> None:
        """What the autoscaler persists before a crash: a higher target in status (a lower one would
        wait for Ray to drain ready workers, and there is no Ray here)."""
        names = sorted(n for n, w in self.model.clusters.items() if w.autoscaling)
        if not names:
            return
        name = self.rng.choice(names)
        status = self.api.get(name).get("status") or {}
        groups = status.get("workerGroups") or []
        if not groups:
            return  # the operator has not written any target yet
        want = self.model.clusters[name]
        for g in groups:
            if g.get("name") in want.groups:
                g["desiredReplicas"] = min(MAX_REPLICAS, want.groups[g["name"]] + self.rng.randint(1, 2))
                want.groups[g["name"]] = g["desiredReplicas"]
        self.api.patch_status(name, {"workerGroups": groups})
        self.log.append(f"target {name} {want.groups}")

    def random_ops(self, n: int) -> None:
        ops: list[Callable[[], None]] = [self.scale, self.scale, self.delete, self.recreate, self.recreate]
        for _ in range(n):
            self.rng.choice(ops)()


@pytest.mark.timeout(420)
def test_kill_9_at_random_moments_converges_every_time(api: Api, operator_factory: OperatorFactory) -> None:
    rng = random.Random(seed())
    chaos = Chaos(api, rng)
    op: OperatorProcess = operator_factory()
    kills = mid_work = 0
    times: list[str] = []

    def crash(at: float) -> None:
        nonlocal kills
        time.sleep(at)
        op.kill()
        kills += 1

    def report() -> str:
        return ("mutations (last 30):\n  " + "\n  ".join(chaos.log[-30:]) + f"\noperator log ({op.log_path}):\n"
                + op.log_tail(60))

    op.start()
    cycle = 0
    while kills < KILLS:
        cycle += 1
        # With the operator running: new clusters, scaling, deletions, names coming back.
        if chaos.created < N_CLUSTERS:
            chaos.create_batch()
            chaos.random_ops(2)
        else:
            chaos.random_ops(rng.randint(3, 8))
        crash(rng.uniform(0.0, 1.0))
        time.sleep(0.3)  # a request the dying operator had sent has reached the API server
        if problems(api, chaos.model):
            mid_work += 1  # the kill left work undone: the restart has something to finish
        # While it is dead: more of the same, and targets the autoscaler "stored" before the crash.
        chaos.random_ops(rng.randint(0, 2))
        for _ in range(rng.randint(0, 2)):
            chaos.set_target()
        op.start()
        if rng.random() < 0.3:  # and once more, during the first turns over every cluster
            crash(rng.uniform(0.0, 1.0))
            op.start()
        started = time.monotonic()
        took = wait_converged(api, chaos.model, f"cycle {cycle} ({kills} kills)", timeout=90, stable=1.0,
                              extra=report)
        times.append(f"{took:.1f}")
        print(f"cycle {cycle}: {kills} kills, {len(chaos.model.clusters)} clusters, converged in "
              f"{time.monotonic() - started:.1f}s")
    assert kills >= 20
    assert chaos.created == N_CLUSTERS
    # The end: every cluster deleted, and nothing of them left behind.
    for name in sorted(chaos.model.clusters):
        api.delete(name)
    chaos.model.clusters.clear()
    wait_converged(api, chaos.model, "after deleting every cluster", timeout=90, extra=report)
    failures = log_lines(op.log_path.read_text(errors="replace"), ("Traceback", "failed"))
    targets = sum(1 for line in chaos.log if line.startswith("target "))
    print(f"seed {seed()}: {kills} kills in {cycle} cycles, {mid_work} of them left work undone; "
          f"{targets} autoscaler targets set while it was dead; convergence times {', '.join(times)}; "
          f"operator log lines with 'failed'/'Traceback': {len(failures)}")
    for line in failures[:20]:
        print("  " + line)


def test_the_convergence_check_sees_what_is_wrong(api: Api) -> None:
    """The check the chaos tests rely on can fail: no operator runs here, so nothing converges."""
    api.create(manifest("lonely", {"w": 2}))
    model = Model({"lonely": Want({"w": 2})})
    orphan = {"metadata": {"name": "orphan", "labels": {labels.CLUSTER: "gone"}, "finalizers": ["example.com/hold"]},
              "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    api.core.create_namespaced_pod(api.ns, orphan)
    try:
        found = "\n".join(problems(api, model))
        for expected in ("lonely: 0 heads, want 1", "lonely: group w has 0 workers, want 2",
                         "lonely: 0 head services", "pod orphan has finalizers", "pod orphan is an orphan",
                         "lonely: status phase=None"):
            assert expected in found, found
        with pytest.raises(AssertionError, match="not converged after 1s"):
            wait_converged(api, model, "no operator", timeout=1)
    finally:
        api.core.patch_namespaced_pod("orphan", api.ns, {"metadata": {"finalizers": None}})
        api.core.delete_namespaced_pod("orphan", api.ns, grace_period_seconds=0)
