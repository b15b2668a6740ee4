"""Adaptive inference: exit policies, the batch-1 runner, exit evaluation."""

from jaxit.inference.policies import (
    ConfidencePolicy,
    ELBERTPolicy,
    EntropyPolicy,
    ExitPolicy,
    FixedLayerPolicy,
    LayerOutput,
    LTEPolicy,
    NeverExit,
    NormalizedEntropyPolicy,
    PatiencePolicy,
    layer_output,
    make_policy,
)
from jaxit.inference.runner import EarlyExitRunner, ExampleResult, RunResults, make_layer_step

__all__ = [
    "ConfidencePolicy", "ELBERTPolicy", "EarlyExitRunner", "EntropyPolicy", "ExampleResult",
    "ExitPolicy", "FixedLayerPolicy", "LTEPolicy", "LayerOutput", "NeverExit",
    "NormalizedEntropyPolicy", "PatiencePolicy", "RunResults", "layer_output",
    "make_layer_step", "make_policy",
]
