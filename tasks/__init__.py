"""Prefect tasks: thin wrappers that add retries, names and rollback hooks to the core."""
