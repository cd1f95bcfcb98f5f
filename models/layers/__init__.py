"""Shared, registered Keras layers; every model is assembled from these."""
from models.layers.blocks import MLP, MaskedMeanPooling

__all__ = ["MLP", "MaskedMeanPooling"]
