"""The encoder ``features.encoder`` names; the feature functions themselves
(encoder, random-init tower, raw pixels) live in ``ctx_core.encoder.embed``,
shared with the probe stage and the position audit."""

from __future__ import annotations

from typing import Any

from ctx_core.config import Settings
from ctx_core.encoder.artifact import EncoderContract
from ctx_core.encoder.embed import Embedder, pick_device, random_init_tower, raw_pixel_embedder, tower_embedder
from ctx_core.models.towers import Tower
from ctx_core.registry import load_encoder_ref
from ctx_core.tracking import tracking_uri

__all__ = ["Embedder", "load_learned", "pick_device", "random_init_tower", "raw_pixel_embedder", "tower_embedder"]


def load_learned(settings: Settings) -> tuple[Tower, EncoderContract, dict[str, Any]]:
    """The encoder ``features.encoder`` names (path or ``models:/`` reference), its contract and meta.

    Architecture and preprocessing come from the encoder, never from today's
    ``pretrain`` params; ``features.layer`` must be one of its feature layers."""
    ref = settings.params.features.encoder
    resolved = ref if ref.startswith("models:/") else str(settings.path(ref))
    tower, contract, meta = load_encoder_ref(resolved, tracking_uri(settings))
    contract.layer_size(settings.params.features.layer, "features.layer")
    return tower, contract, meta
