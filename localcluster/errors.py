"""The one error a local cluster's operations raise."""

from __future__ import annotations


class ClusterError(RuntimeError):
    """A cluster operation failed; the message says which and where to look."""
