"""Task data: registry, loaders (local GLUE-layout files, HF datasets, tfds, synthetic),
tokenization, length-bucketed batches, and task metrics.

    task = get_task("sst2")
    examples = load_examples(task, "dev")                   # local files in the shared data dir
    ds = tokenize_examples(tokenizer, task, examples, max_length=128)
    for batch in iterate_batches(ds, 32, seed=0, epoch=0): ...      # training
    for batch, valid in eval_batches(ds, 64): ...                    # evaluation
    compute_metrics(task, predictions, labels)
"""

from jaxit.data.batching import (
    DEFAULT_BUCKETS,
    batch_indices,
    bucket_length,
    eval_batches,
    iterate_batches,
    make_buckets,
    num_batches,
    pad_batch,
)
from jaxit.data.example import DataFormatError, Example
from jaxit.data.loaders import SOURCES, LoadedSplit, load_examples, load_split, local_split_path
from jaxit.data.rationales import Rationale, load_rationales
from jaxit.data.synthetic import make_synthetic_task, synthetic_tokenizer
from jaxit.data.tasks import TaskSpec, get_task, register_task, task_names
from jaxit.data.tokenize import EncodedDataset, encode_words, tokenize_examples
from jaxit.metrics import compute_metrics

__all__ = [
                                 "DEFAULT_BUCKETS",
                                 "SOURCES",
                                 "DataFormatError",
                                 "EncodedDataset",
                                 "Example",
                                 "LoadedSplit",
                                 "Rationale",
                                 "TaskSpec",
                                 "batch_indices",
                                 "bucket_length",
                                 "compute_metrics",
                                 "encode_words",
                                 "eval_batches",
                                 "get_task",
                                 "iterate_batches",
                                 "load_examples",
                                 "load_rationales",
                                 "load_split",
                                 "local_split_path",
                                 "make_buckets",
                                 "make_synthetic_task",
                                 "num_batches",
                                 "pad_batch",
                                 "register_task",
                                 "synthetic_tokenizer",
                                 "task_names",
                                 "tokenize_examples",
]
