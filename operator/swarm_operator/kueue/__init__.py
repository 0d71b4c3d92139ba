"""Queueing with Kueue: a queued object's Workload (workload.py, pure) and its lifecycle's reads and writes
(lifecycle.py), shared by SwarmJob (jobs/admission.py) and SwarmCluster (turn.py)."""
