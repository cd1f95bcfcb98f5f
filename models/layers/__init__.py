"""Shared, registered Keras layers; every model is assembled from these."""
from models.layers.attention import TargetAttention
from models.layers.blocks import MLP, MaskedMeanPooling
from models.layers.experts import CGC, PLE, ExpertGate

__all__ = ["CGC", "MLP", "PLE", "ExpertGate", "MaskedMeanPooling", "TargetAttention"]
