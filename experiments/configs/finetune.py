"""Fine-tune a pretrained encoder on a task.

    jaxit train --config=experiments/configs/finetune.py --workdir=runs/sst2 \
        --config.task=sst2 --config.model=../shared/models/all-MiniLM-L6-v2

Variants: `:tiny` (random encoder, synthetic data, a few steps: for smoke tests).
"""

from jaxit.configs import base_config, tiny_config


def get_config(variant: str = ""):
    if variant == "tiny":
        return tiny_config()
    if variant:
        raise ValueError(f"unknown variant {variant!r} (known: tiny)")
    return base_config()
