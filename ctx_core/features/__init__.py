"""Patch features from a pretrained encoder: extraction to sharded files and
normalised-correlation nearest neighbours."""
