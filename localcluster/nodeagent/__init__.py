"""Process nodes: Nodes that kwok does not manage, whose pods run as local processes.

Each pod gets its own network namespace on a shared bridge (its own IP, so every Ray
node can use Ray's default ports), its containers run with the pod's environment and
the local environment's ``ray``/``python`` standing in for the image, and its status
(IP, phase, container states, readiness, exit codes) goes back to the API server as a
kubelet's would. Cluster DNS is a per-pod hosts file kept current from EndpointSlices.

``python -m localcluster.nodeagent --kubeconfig K --node NAME --cpu 8 --memory 16Gi --gpus 2``
runs one; ``NodeAgentProcess`` starts and stops one from Python. See docs/localcluster.md.
"""

from localcluster.nodeagent.process import NodeAgentProcess, pod_usage, read_logs

__all__ = ["NodeAgentProcess", "pod_usage", "read_logs"]
