"""Tasks and data: templates and label words (registry), loaders (data), token ids (encode),
metrics."""

from secfwt_jax.tasks.bbt_split import load_bbt_test, load_full_train
from secfwt_jax.tasks.data import (
    ENV_DATA_DIR,
    HF_SOURCES,
    LOCAL_LAYOUTS,
    DatasetLoadError,
    Example,
    examples_from_hf,
    load_hf,
    load_split,
    read_tsv,
    true_few_shot,
)
from secfwt_jax.tasks.encode import (
    ENV_TOKENIZER,
    Batch,
    encode,
    label_word_ids,
    load_tokenizer,
    row_lengths,
)
from secfwt_jax.tasks.metrics import METRICS, accuracy, compute_metrics, f1
from secfwt_jax.tasks.registry import Task, get_task, register_task, task_names

__all__ = [
    "ENV_DATA_DIR", "ENV_TOKENIZER", "HF_SOURCES", "LOCAL_LAYOUTS", "METRICS",
    "Batch", "DatasetLoadError", "Example", "Task",
    "accuracy", "compute_metrics", "encode", "examples_from_hf", "f1", "get_task",
    "label_word_ids", "load_bbt_test", "load_full_train", "load_hf", "load_split",
    "load_tokenizer", "read_tsv", "register_task", "row_lengths", "task_names", "true_few_shot",
]
