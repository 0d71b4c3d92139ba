"""Shared test data: manifests used by more than one test tier (unit and integration)."""
