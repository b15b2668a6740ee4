"""The SST-2 slice that the real-weight learning tests train on: MiniLM-L6, the first
`n_train` training sentences after a seeded shuffle, 64 tokens at most."""

from jaxit.configs import base_config


def sst2_slice_config(minilm_dir, data_dir, n_train: int = 1024):
    """A base config for MiniLM-L6 on `n_train` SST-2 training sentences, dev evaluated once
    at the end, no progress bar."""
    c = base_config()
    c.model = str(minilm_dir)
    c.task = "sst2"
    c.data.data_dir = str(data_dir)
    c.data.max_length = 64
    c.data.buckets = (32, 64)
    c.data.max_train_examples = n_train
    c.save_every = 10_000
    c.eval_batch_size = 128
    c.progress = False
    return c
