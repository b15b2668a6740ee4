"""Interpretability tools: Integrated Gradients (generic, and of DACT-BERT's output and
halting values), token heatmaps (HTML, PNG), and DACT analyses (exit-layer histogram,
attention entropy, pruning of never-used layers). `jaxit interpret` runs them all."""

from jaxit.interpret.dact_analysis import (
    attention_entropy,
    check_dact_params,
    exit_histogram,
    prune_unused_layers,
    pruning_check,
    write_attention_entropy,
    write_exit_histogram,
)
from jaxit.interpret.integrated_gradients import (
    DACTAttributions,
    IGResult,
    dact_attributions,
    integrated_gradients,
    make_dact_attributor,
    path_coefficients,
    token_attributions,
)
from jaxit.interpret.render import heatmap_html, html_page, write_heatmap_png

__all__ = [
    "DACTAttributions", "IGResult", "attention_entropy", "check_dact_params",
    "dact_attributions", "exit_histogram", "heatmap_html", "html_page", "integrated_gradients",
    "make_dact_attributor", "path_coefficients", "prune_unused_layers", "pruning_check",
    "token_attributions", "write_attention_entropy", "write_exit_histogram",
    "write_heatmap_png",
]
