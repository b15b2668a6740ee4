"""Adaptive inference: exit policies, the batch-1 runners (early exit, token dropping), exit
evaluation."""

from jaxit.inference.evaluate_exits import (
    ExitTrace,
    collect_layer_outputs,
    evaluate_policy,
    exit_report,
    layerwise_scores,
    measure_wallclock,
    plot_tradeoff,
    simulate_exits,
    threshold_sweep,
)
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
    device_gate,
    layer_output,
    make_policy,
)
from jaxit.inference.runner import (
    EarlyExitRunner,
    ExampleResult,
    RunResults,
    make_layer_step,
    unpack,
)
from jaxit.inference.token_drop import (
    TokenDropResult,
    TokenDropResults,
    TokenDropRunner,
    compare_with_static,
)

__all__ = [
    "ConfidencePolicy", "ELBERTPolicy", "EarlyExitRunner", "EntropyPolicy", "ExampleResult",
    "ExitPolicy", "ExitTrace", "FixedLayerPolicy", "LTEPolicy", "LayerOutput", "NeverExit",
    "NormalizedEntropyPolicy", "PatiencePolicy", "RunResults", "TokenDropResult",
    "TokenDropResults", "TokenDropRunner", "collect_layer_outputs", "compare_with_static",
    "device_gate", "evaluate_policy", "exit_report", "layer_output", "layerwise_scores",
    "make_layer_step", "make_policy", "measure_wallclock", "plot_tradeoff", "simulate_exits",
    "threshold_sweep", "unpack",
]
