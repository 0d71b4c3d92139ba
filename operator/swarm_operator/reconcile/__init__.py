"""Pure decisions: desired state vs observed pods → actions, each with its reason."""
