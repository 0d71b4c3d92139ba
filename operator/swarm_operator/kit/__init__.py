"""The controller kit: what any resource kind the operator serves runs on, SwarmCluster first.

- `cache.py`      the watch cache: a kind's own objects (ObjectStore) and the children it owns (ChildStore)
- `workqueue.py`  a keyed work queue with client-go's contract
- `watch.py`      client-go's reflector, for children the API server selects by label
- `blocking.py`   the one way a blocking call (the Kubernetes client, Ray's GcsClient) leaves the event loop
- `effects.py`    Effects: every write of one turn for one object, each answer written into the cache
- `memory.py`     Memories: one typed record per object of what is kept only in memory
- `loop.py`       Loop: one kind's events → cache and queue, its workers, its re-list; the Reconciler protocol

docs/architecture.md ("A second kind on the kit") says how a kind plugs in.
"""
