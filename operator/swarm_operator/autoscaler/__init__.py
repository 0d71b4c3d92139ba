"""Autoscaling from Ray's own resource state: the pure policy (``policy``), the GCS client and drain execution."""
