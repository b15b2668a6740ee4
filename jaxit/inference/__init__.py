"""Adaptive inference: exit policies, the batch-1 runners (early exit, token dropping), the
batched engine (every method at any batch size), exit evaluation."""

from jaxit.inference.buckets import examples_from_dataset, load_runner_examples
from jaxit.inference.engine import BatchedEngine
from jaxit.inference.engine_results import EngineResults
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
from jaxit.inference.exit_steps import make_fused_run, make_layer_step, unpack
from jaxit.inference.policies import (
    ConfidencePolicy,
    DACTPolicy,
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
from jaxit.inference.runner import EarlyExitRunner, ExampleResult, RunResults
from jaxit.inference.throughput import measure_throughput
from jaxit.inference.token_drop import (
    TokenDropResult,
    TokenDropResults,
    TokenDropRunner,
)
from jaxit.inference.token_drop_timing import compare_with_static

__all__ = [
    "BatchedEngine",
    "ConfidencePolicy",
    "DACTPolicy",
    "ELBERTPolicy",
    "EarlyExitRunner",
    "EngineResults",
    "EntropyPolicy",
    "ExampleResult",
    "ExitPolicy",
    "ExitTrace",
    "FixedLayerPolicy",
    "LTEPolicy",
    "LayerOutput",
    "NeverExit",
    "NormalizedEntropyPolicy",
    "PatiencePolicy",
    "RunResults",
    "TokenDropResult",
    "TokenDropResults",
    "TokenDropRunner",
    "collect_layer_outputs",
    "compare_with_static",
    "device_gate",
    "evaluate_policy",
    "examples_from_dataset",
    "exit_report",
    "layer_output",
    "layerwise_scores",
    "load_runner_examples",
    "make_fused_run",
    "make_layer_step",
    "make_policy",
    "measure_throughput",
    "measure_wallclock",
    "plot_tradeoff",
    "simulate_exits",
    "threshold_sweep",
    "unpack",
]
