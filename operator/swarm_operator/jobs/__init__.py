"""SwarmJob: one Ray job run to completion, on a SwarmCluster of its own or on an existing one.

spec.py reads the manifest; machine.py decides (pure); status.py and cluster.py build what is written;
rayapi.py is the one module that talks to Ray's Jobs API; turn.py runs one turn of one job.
"""
