"""`make demo`: a local Kubernetes, the CRD, the operator, and sample SwarmClusters, end to end.

Run as ``python -m localcluster.demo``. Set DEMO_KEEP=1 to leave the cluster and the
operator running afterwards (then `make cluster-down` cleans up).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from kubernetes import client

from localcluster import build
from localcluster.chaos import fail_pod
from localcluster.cluster import LocalCluster

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ("cpu-small.yaml", "gpu-autoscaling.yaml")


def say(msg: str) -> None:
    print(f"\n==> {msg}", flush=True)


def kubectl(lc: LocalCluster, *args: str, check: bool = True) -> str:
    cmd = ["kubectl", f"--kubeconfig={lc.kubeconfig}", *args]
    out = subprocess.run(cmd, env=lc.env(), capture_output=True, text=True, check=False)
    if check and out.returncode != 0:
        raise SystemExit(f"`kubectl {' '.join(args)}` failed: {out.stderr.strip()}")
    return out.stdout


def wait_running(lc: LocalCluster, names: list[str], timeout: float = 120) -> None:
    custom: Any = client.CustomObjectsApi(lc.api_client())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        phases = {n: (custom.get_namespaced_custom_object("swarm.io", "v1alpha1", "default", "swarmclusters", n)
                      .get("status") or {}).get("phase") for n in names}
        print("    " + ", ".join(f"{n}: {p or '…'}" for n, p in phases.items()), flush=True)
        if all(p == "Running" for p in phases.values()):
            return
        time.sleep(2)
    raise SystemExit(f"clusters not Running after {timeout}s; see the operator log")


def main() -> int:
    started = time.monotonic()
    say("building the control plane (cached by version; a cold build takes 15–30 min)")
    if build.main([]) != 0:
        return 1
    lc = LocalCluster.from_env()
    say("starting the local cluster (kube-apiserver, etcd, controller-manager, scheduler, kwok)")
    lc.up()
    say("installing the SwarmCluster CRD")
    kubectl(lc, "apply", "--server-side", "-f", str(ROOT / "crds" / "swarmcluster.yaml"))
    kubectl(lc, "wait", "--for=condition=Established", "crd/swarmclusters.swarm.io", "--timeout=60s")
    log_path = lc.root / "demo-operator.log"
    say(f"starting swarm-operator (log: {log_path})")
    env = {**lc.env(), "KUBECONFIG": str(lc.kubeconfig)}
    with log_path.open("ab") as log:
        op = subprocess.Popen([sys.executable, "-m", "swarm_operator", "run", "--all-namespaces",
                               "--metrics-port", "18080", "--health-port", "18081"],
                              env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        say("applying the samples: " + ", ".join(SAMPLES))
        for sample in SAMPLES:
            kubectl(lc, "apply", "-n", "default", "-f", str(ROOT / "manifests" / "samples" / sample))
        wait_running(lc, ["cpu-small", "gpu-autoscaling"])
        say("kubectl get swarmclusters,pods")
        print(kubectl(lc, "get", "swc,pods", "-n", "default", "-o", "wide"))
        say("healing: failing a worker of cpu-small (its container exits 1)")
        core: Any = client.CoreV1Api(lc.api_client())
        victim = str(core.list_namespaced_pod("default", label_selector="swarm.io/cluster=cpu-small,"
                                              "swarm.io/node-type=worker").items[0].metadata.name)
        fail_pod(lc.api_client(), "default", victim)
        print(f"    failed {victim}")
        time.sleep(3)
        wait_running(lc, ["cpu-small"])
        print(kubectl(lc, "get", "pods", "-n", "default", "-l", "swarm.io/cluster=cpu-small"))
        print(kubectl(lc, "get", "events", "-n", "default", "--field-selector",
                      "involvedObject.name=cpu-small", "-o", "custom-columns=TYPE:.type,REASON:.reason,"
                      "MESSAGE:.message"))
        say("still to come: real Ray processes on process nodes (today's nodes are kwok's fake ones),"
            " autoscaling from Ray's demand, the Helm chart")
    finally:
        if os.environ.get("DEMO_KEEP") == "1":
            print(f"\noperator PID {op.pid} keeps running; KUBECONFIG={lc.kubeconfig}; `make cluster-down` ends it all")
        else:
            op.terminate()
            op.wait(15)
            say("bringing the local cluster down (DEMO_KEEP=1 keeps it)")
            lc.down()
    print(f"\ndemo finished in {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
