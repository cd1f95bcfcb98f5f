"""Shared, registered Keras layers; every model is assembled from these."""
from models.layers.attention import TargetAttention
from models.layers.blocks import (
    MLP,
    BroadcastConcatenate,
    CrossNetwork,
    IdLogitOffset,
    MaskedMeanPooling,
    ScoringDense,
    SequenceEmbedding,
    TokenLookup,
    TokenScores,
    batch_gather,
)
from models.layers.experts import CGC, PLE, ExpertGate
from models.layers.match import DecayedMatchSum, IdMatchCount, MatchSummary, SessionPosition

__all__ = ["CGC", "MLP", "PLE", "BroadcastConcatenate", "CrossNetwork",
           "DecayedMatchSum", "ExpertGate",
           "IdLogitOffset", "IdMatchCount", "MaskedMeanPooling", "MatchSummary", "ScoringDense",
           "SequenceEmbedding", "SessionPosition",
           "TargetAttention", "TokenLookup", "TokenScores",
           "batch_gather"]
