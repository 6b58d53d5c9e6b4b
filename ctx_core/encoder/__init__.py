"""The encoder contract: weights plus the architecture and preprocessing to use them.

``artifact``: :class:`EncoderContract`, ``save_encoder`` / ``load_encoder`` /
``read_contract`` (``weights_only`` loading). ``preprocess``: the input
transform (colour map, patch normalisation) the contract's values select.
Loading by registry reference (``models:/name@alias``) is ``ctx_core.registry``.
"""
