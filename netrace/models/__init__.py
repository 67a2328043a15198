"""netrace.models: populations of K networks of one architecture with a leading member dim.

>>> from netrace.models import MLPSpec, build_model
>>> model = build_model(MLPSpec(in_features=4, hidden=(16,)), k=8)
>>> import torch
>>> model(torch.zeros(32, 4)).shape
torch.Size([8, 32, 1])
"""

from __future__ import annotations

from netrace.models._init import INIT_DISTS, INIT_SCHEMES, RECURRENT_INITS
from netrace.models._population_model import PopulationModel, build_model, member_module_from
from netrace.models._specs import ACTIVATIONS, NORMS, TASKS, CNNSpec, MLPSpec, ModelSpec, RNNSpec

__all__ = [
    "ACTIVATIONS",
    "INIT_DISTS",
    "INIT_SCHEMES",
    "NORMS",
    "RECURRENT_INITS",
    "TASKS",
    "CNNSpec",
    "MLPSpec",
    "ModelSpec",
    "PopulationModel",
    "RNNSpec",
    "build_model",
    "member_module_from",
]
