"""Shared, registered Keras layers; every model is assembled from these."""
from models.layers.attention import TargetAttention
from models.layers.blocks import MLP, CrossNetwork, MaskedMeanPooling
from models.layers.experts import CGC, PLE, ExpertGate
from models.layers.match import IdMatchCount, MatchSummary

__all__ = ["CGC", "MLP", "PLE", "CrossNetwork", "ExpertGate", "IdMatchCount", "MaskedMeanPooling",
           "MatchSummary", "TargetAttention"]
