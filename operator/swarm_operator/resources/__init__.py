"""Pure builders: spec → Kubernetes objects as plain dicts. No API calls here."""
