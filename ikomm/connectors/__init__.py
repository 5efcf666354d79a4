"""Connectors: each outside system behind one small class that takes its settings in its constructor."""
