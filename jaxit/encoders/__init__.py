"""Functional BERT-family encoders and Hugging Face checkpoint conversion."""

from jaxit.encoders.config import EncoderConfig, config_from_hf_dict, load_config, with_precision
from jaxit.encoders.tokenizer import load_tokenizer
from jaxit.encoders.transformer import (
    MASK_MIN,
    Encoder,
    block,
    embed,
    forward_all,
    init_params,
    layer_params,
    make_encoder,
    mask_bias_from,
    pooled,
)
from jaxit.encoders.weights import (
    CheckpointError,
    load_pretrained,
    params_from_state_dict,
    params_to_state_dict,
    save_pretrained,
)

__all__ = [
    "MASK_MIN", "CheckpointError", "Encoder", "EncoderConfig", "block", "config_from_hf_dict",
    "embed", "forward_all", "init_params", "layer_params", "load_config", "load_pretrained",
    "load_tokenizer", "make_encoder", "mask_bias_from", "params_from_state_dict",
    "params_to_state_dict", "pooled", "save_pretrained", "with_precision",
]
