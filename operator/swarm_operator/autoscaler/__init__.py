"""Autoscaling from Ray's own resource state: ``snapshot`` (what Ray reports, Ray-free), ``gcs`` (the one
package that talks to Ray), ``inputs`` and ``policy`` (pure), ``runner`` (one turn: read, decide, drain)."""
