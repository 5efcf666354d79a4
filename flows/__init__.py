"""Prefect flows: thin, they compose tasks (the wave and rollback flows come with their issues)."""
