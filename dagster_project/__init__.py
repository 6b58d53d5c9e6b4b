"""Dagster front door: thin assets over the ``ctx_core`` stage functions."""
