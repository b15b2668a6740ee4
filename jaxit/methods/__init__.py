"""Training methods: plain fine-tuning and the adaptive-inference methods."""

from jaxit.methods.base import Method, label_by_top_key
from jaxit.methods.finetune import make_finetune

__all__ = ["Method", "label_by_top_key", "make_finetune"]
