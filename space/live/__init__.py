"""The live tools: run a dataset's model on text the user types (activations, top neurons, finder, probe)."""
