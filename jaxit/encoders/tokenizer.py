"""The model's tokenizer as a `tokenizers.Tokenizer`, with padding/truncation switched off
(jaxit pads to its own length buckets)."""

from __future__ import annotations

import os

from tokenizers import Tokenizer

from jaxit.encoders.weights import resolve_checkpoint


def load_tokenizer(name_or_path: str | os.PathLike) -> Tokenizer:
    """Reads `tokenizer.json` from a checkpoint directory (or converts a slow tokenizer's
    files with transformers). Padding and truncation set in the file are disabled."""
    ckpt = resolve_checkpoint(name_or_path)
    tj = ckpt / "tokenizer.json"
    if tj.is_file():
        try:
            tok = Tokenizer.from_file(str(tj))
        except Exception as e:
            raise ValueError(f"{tj} is not a valid tokenizer.json: {e}") from e
    else:
        from transformers import AutoTokenizer

        try:
            hf = AutoTokenizer.from_pretrained(str(ckpt), use_fast=True)
        except Exception as e:
            raise FileNotFoundError(
                f"no usable tokenizer in {ckpt} (no tokenizer.json, and transformers could not "
                f"build one: {e})"
            ) from e
        tok = hf.backend_tokenizer
    tok.no_padding()
    tok.no_truncation()
    return tok
