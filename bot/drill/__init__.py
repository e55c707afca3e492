"""Festival drills: a whole team, several customers each, the clock running (no chat app)."""
