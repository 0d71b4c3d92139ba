"""A real Kubernetes control plane for the demo and the tests, built from Go modules."""
