"""kwokctl as this project runs it: the components it starts, the configuration it reads, and one call of it.

Only built binaries are used (plain paths, no URLs), so nothing is downloaded.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from localcluster import versions
from localcluster.errors import ClusterError

# kwokctl's own components, in start order; each writes <workdir>/pids/<binary>.pid.
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok-controller")

# Loaded by every kwokctl call because it sits at $KWOK_WORKDIR/kwok.yaml.
#  - bindAddress: every component listens on loopback only (kwok's default is 0.0.0.0).
#  - kwok manages only nodes annotated kwok.x-k8s.io/node=fake (the binary runtime's
#    default is every node), so nodes run by something else can join the cluster later.
#  - fake pods get loopback IPs (kwok's default is 10.0.0.0/24): anything that connects
#    to a fake pod (the operator reading a Ray head's GCS) stays on this machine, and a
#    /12 has room for the scale benchmarks' thousands of pods.
#  - the scheduler's and controller manager's client rates are raised from 50 and 20
#    requests/s, as large clusters do, so benchmarks measure the operator, not throttling.
KWOKCTL_CONFIG = """\
kind: KwokctlConfiguration
apiVersion: config.kwok.x-k8s.io/v1alpha1
options:
  bindAddress: 127.0.0.1
componentsPatches:
- name: kwok-controller
  extraArgs:
  - key: manage-all-nodes
    value: "false"
    override: true
  - key: manage-nodes-with-annotation-selector
    value: kwok.x-k8s.io/node=fake
  - key: cidr
    value: 127.128.0.0/12
- name: kube-scheduler
  extraArgs:
  - key: kube-api-qps
    value: "500"
  - key: kube-api-burst
    value: "1000"
- name: kube-controller-manager
  extraArgs:
  - key: kube-api-qps
    value: "200"
  - key: kube-api-burst
    value: "400"
"""


def run(name: str, root: Path, env: dict[str, str], *args: str, timeout: float = 300) -> None:
    """``kwokctl --name <name> <args>``, its output appended to ``<root>/<name>.kwokctl.log``."""
    cmd = [str(versions.tool_path("kwokctl")), "--name", name, *args]
    logfile = root / f"{name}.kwokctl.log"
    with logfile.open("a") as fh:
        fh.write(f"$ {' '.join(cmd)}\n")
        fh.flush()
        try:
            proc = subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise ClusterError(f"`{' '.join(cmd)}` did not finish in {timeout:.0f}s; see {logfile}") from None
    if proc.returncode != 0:
        tail = "".join(logfile.read_text().splitlines(keepends=True)[-15:])
        raise ClusterError(f"`{' '.join(cmd)}` exited {proc.returncode}; see {logfile}:\n{tail}")
