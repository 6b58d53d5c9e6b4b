"""Frozen-feature probes of an encoder (``ctx probe``)."""
