"""Session 13's queue-order experiment (bench/README.md, gpu-train-8x node-seconds): seeds 1-10 of one family,
three episodes, our policy and Ray's, with work that arrives together queued as generated, CPU-only work first,
or GPU work first. Prints the sums of node-seconds, cost, task-seconds pending and launches.

    .venv/bin/python bench/results/autoscaler-queue-order-experiment-2026-12-07-s13.py . gpu-train-8x cpu-first

The first argument is a checkout to import bench/ and operator/ from: this repository as it is, or a copy with
autoscaler-deferral-experiment-2026-12-07-s13.patch applied (``patch -p1``) for the "deferred nodes" rows.
"""

import random
import sys

root, family_name, order = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, root)
sys.path.insert(0, root + "/operator")
import bench.autosim as A  # noqa: E402

family = next(f for f in A.FAMILIES if f.name == family_name)
if order != "generated":
    generate = family.episode

    def gpu(w: A.Work) -> bool:
        return any("GPU" in b for b in w.bundles)

    def episode(rng: random.Random, t: float) -> list[A.Work]:
        # Stable: within one arrival time, one kind before the other, each in the order generated.
        return sorted(generate(rng, t), key=lambda w: (w.arrival, gpu(w) if order == "cpu-first" else not gpu(w)))

    family = A.Family(family.name, family.types, episode)
sums = {"ours": [0.0] * 4, "ray": [0.0] * 4}
for seed in range(1, 11):
    trace = A.make_trace(family, 3, seed)
    for side, driver in (("ours", A.OursDriver()), ("ray", A.RayDriver())):
        r = A.simulate(trace, driver)
        for i, v in enumerate((r.node_seconds, r.cost, r.pending_seconds, r.launched)):
            sums[side][i] += v
print(family_name, order, "node-s, cost, task-s pending, launched:", sums)
