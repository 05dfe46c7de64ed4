"""Examples for the registered tasks: local LM-BFF-style directories, Hugging Face `datasets`,
and Black-Box Tuning's "true few-shot" split.

Local layout (as in the project's shared data directory; each dataset's README.txt lists every
file's source, format and row counts):

    <data_dir>/<dataset dir>/k-shot/<k>-<seed>/train.tsv     k examples per class
    <data_dir>/<dataset dir>/k-shot/<k>-<seed>/dev.tsv       k examples per class
    <data_dir>/<dataset dir>/<test file>                     see LOCAL_LAYOUTS
    <data_dir>/<dataset dir>/<full training file>            sst2, mrpc, rte only

The directory comes from the `data_dir` argument or the SECFWT_DATA_DIR environment variable.
Formats differ by source: LM-BFF files are raw TSV (no quoting: a lone `"` is text), MRPC's
LM-BFF files start with a UTF-8 BOM, SNLI's LM-BFF rows have 11 or 15 fields with the gold label
last, RTE/SNLI LM-BFF files name their labels, and the RLPrompt (agnews, yelp, dbpedia) and
Hugging Face exports (hf_*.tsv) are csv-quoted, some with CRLF line endings.

The test split of each task is the one BBT evaluates on (`bbt.py`): the GLUE validation set for
sst2, mrpc and rte (GLUE test labels are hidden), the test set for the others.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from secfwt_jax.tasks.registry import Task, as_task

ENV_DATA_DIR = "SECFWT_DATA_DIR"
SPLITS = ("train", "dev", "test")
HF_SPLITS = ("train", "test")


@dataclasses.dataclass(frozen=True)
class Example:
    """One labelled example: text_a, text_b (None for single-sentence tasks), label id."""

    text_a: str
    text_b: str | None
    label: int


@dataclasses.dataclass(frozen=True)
class TsvFormat:
    """How to read one kind of TSV file: the header names of the text and label columns, and
    whether fields are csv-quoted (pandas `to_csv(sep="\\t")`) or raw (`QUOTE_NONE`).
    label_is_last_field: take the label from the last field of each row, whatever the row's
    length (SNLI's LM-BFF files).
    """

    text_a: str
    text_b: str | None
    label: str
    quoted: bool
    label_is_last_field: bool = False


@dataclasses.dataclass(frozen=True)
class LocalLayout:
    """Where a task's files live under the data directory, and their formats.

    test / full_train: (file name, format), or None when the local copy lacks that file
    (`missing_note` then says why and where to get it). bbt_test: BBT's test split as Hugging
    Face gives it where `test` is LM-BFF's text of it (None: `test` is BBT's; tasks.bbt_split).
    """

    dirname: str
    kshot: TsvFormat
    test: tuple[str, TsvFormat] | None
    full_train: tuple[str, TsvFormat] | None = None
    missing_note: str = ""
    bbt_test: tuple[str, TsvFormat] | None = None


_LMBFF_SINGLE = TsvFormat("sentence", None, "label", quoted=False)
_LMBFF_MRPC = TsvFormat("#1 String", "#2 String", "Quality", quoted=False)
_LMBFF_RTE = TsvFormat("sentence1", "sentence2", "label", quoted=False)
_LMBFF_SNLI = TsvFormat(
    "sentence1", "sentence2", "gold_label", quoted=False, label_is_last_field=True
)
_HF_GLUE_PAIR = TsvFormat("sentence1", "sentence2", "label", quoted=True)
_NO_FULL_TEST = (
    "the full {what} set is not in the local copy (the file is over 4 MiB); load it from the "
    "Hugging Face hub with load_hf({task!r}, 'test') where the hub is reachable"
)

LOCAL_LAYOUTS: dict[str, LocalLayout] = {
    # LM-BFF's test.tsv (= GLUE SST-2 dev, 872 rows, LM-BFF text version, as the k-shot files).
    "sst2": LocalLayout(
        "sst2", _LMBFF_SINGLE,
        test=("glue_dev_lmbff_order.tsv", _LMBFF_SINGLE),
        full_train=("glue_train.tsv", TsvFormat("sentence", None, "label", quoted=False)),
        bbt_test=("glue_validation_hf_order.tsv", TsvFormat("sentence", None, "label", True)),
    ),
    "yelp": LocalLayout(
        "yelp_polarity", TsvFormat("text", None, "label", quoted=True), test=None,
        missing_note=_NO_FULL_TEST.format(what="Yelp polarity test (38000 rows)", task="yelp"),
    ),
    "agnews": LocalLayout(
        "agnews", TsvFormat("text", None, "label", quoted=True),
        test=("test.tsv", TsvFormat("sentence", None, "label", quoted=True)),
    ),
    "dbpedia": LocalLayout(
        "dbpedia", TsvFormat("sentence", None, "label", quoted=True), test=None,
        missing_note=_NO_FULL_TEST.format(what="DBpedia test (70000 rows)", task="dbpedia"),
    ),
    # LM-BFF's test.tsv (= GLUE MRPC dev, 408 rows).
    "mrpc": LocalLayout(
        "mrpc", _LMBFF_MRPC,
        test=("glue_dev_lmbff.tsv", _LMBFF_MRPC),
        full_train=("hf_train.tsv", _HF_GLUE_PAIR),
        bbt_test=("hf_validation.tsv", _HF_GLUE_PAIR),
    ),
    # LM-BFF's test.tsv (= GLUE RTE dev, 277 rows).
    "rte": LocalLayout(
        "rte", _LMBFF_RTE,
        test=("glue_dev_lmbff.tsv", _LMBFF_RTE),
        full_train=("hf_train.tsv", _HF_GLUE_PAIR),
        bbt_test=("hf_validation.tsv", _HF_GLUE_PAIR),
    ),
    # Hugging Face snli test without the unlabelled (-1) rows, 9824 rows, as BBT filters.
    "snli": LocalLayout(
        "snli", _LMBFF_SNLI,
        test=("hf_test.tsv", TsvFormat("premise", "hypothesis", "label", quoted=True)),
    ),
}


@dataclasses.dataclass(frozen=True)
class HfSource:
    """A task's Hugging Face dataset: hub path and config, the split BBT tests on, and the
    text columns."""

    path: str
    name: str | None
    test_split: str
    text_a: str
    text_b: str | None = None


HF_SOURCES: dict[str, HfSource] = {
    "sst2": HfSource("glue", "sst2", "validation", "sentence"),
    "yelp": HfSource("yelp_polarity", None, "test", "text"),
    "agnews": HfSource("ag_news", None, "test", "text"),
    "dbpedia": HfSource("dbpedia_14", None, "test", "content"),
    "mrpc": HfSource("glue", "mrpc", "validation", "sentence1", "sentence2"),
    "rte": HfSource("glue", "rte", "validation", "sentence1", "sentence2"),
    "snli": HfSource("snli", None, "test", "premise", "hypothesis"),
}


class DatasetLoadError(RuntimeError):
    """A Hugging Face dataset could not be loaded (typically: the hub is unreachable)."""


def clean_text(task: Task | str, text: str) -> str:
    """The text as BBT's loaders (dataloader.py) pass it on: yelp's literal backslash-n becomes
    a space (YelpPLoader), dbpedia's content is stripped (DBPediaLoader); other texts keep their
    whitespace (Hugging Face's SST-2 sentences end with a space: one more BPE token, as BBT's)."""
    name = as_task(task).name
    if name == "yelp":
        text = text.replace("\\n", " ")
    return text.strip() if name == "dbpedia" else text


def parse_label(task: Task | str, raw, where: str = "") -> int:
    """Label id from an integer (or its string) or one of `task.label_names`.

    ValueError naming the value, `where` it was read, and the accepted values otherwise.
    """
    t = as_task(task)
    label = None
    if isinstance(raw, str):
        value = raw.strip()
        if value in t.label_names:
            return t.label_names.index(value)
        if value.lstrip("-").isdigit():
            label = int(value)
    elif isinstance(raw, int | np.integer) and not isinstance(raw, bool):
        label = int(raw)
    if label is None or not 0 <= label < t.num_labels:
        raise ValueError(
            f"{where}bad label {raw!r} for task {t.name!r}; accepted: ids 0..{t.num_labels - 1} "
            f"or names {', '.join(t.label_names)}"
        )
    return label


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """`data_dir`, or the SECFWT_DATA_DIR environment variable; it must be a directory."""
    chosen = data_dir if data_dir is not None else os.environ.get(ENV_DATA_DIR)
    if not chosen:
        raise ValueError(
            f"no data directory: pass data_dir or set {ENV_DATA_DIR} to a directory holding "
            "<dataset>/k-shot/<k>-<seed>/{train,dev}.tsv"
        )
    path = Path(chosen).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"data directory {str(path)!r} does not exist; expected a directory holding "
            f"{', '.join(sorted({lay.dirname for lay in LOCAL_LAYOUTS.values()}))}, each with "
            "k-shot/<k>-<seed>/{train,dev}.tsv"
        )
    return path


def _entry(table: dict, task: Task, what: str):
    """table[task.name], or ValueError naming the task and the tasks that have `what`."""
    if task.name not in table:
        raise ValueError(f"task {task.name!r} has no {what}; tasks with one: {', '.join(table)}")
    return table[task.name]


def _layout(task: Task) -> LocalLayout:
    return _entry(LOCAL_LAYOUTS, task, "local data layout")


def read_tsv(path: str | os.PathLike, task: Task | str, fmt: TsvFormat) -> list[Example]:
    """Examples of one TSV file with a header row, read as `fmt` says.

    A UTF-8 BOM is dropped and CRLF line endings are accepted. Blank lines are skipped. A row
    with the wrong number of fields, a missing column or a bad label is a ValueError naming
    the file and line.
    """
    t = as_task(task)
    path = Path(path)
    quoting = csv.QUOTE_MINIMAL if fmt.quoted else csv.QUOTE_NONE
    examples = []
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=quoting)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path}: empty file, expected a header row")
        columns = {}
        for key in ("text_a", "text_b", "label"):
            name = getattr(fmt, key)
            if name is None or key == "label" and fmt.label_is_last_field:
                continue
            if name not in header:
                raise ValueError(f"{path}: no column {name!r} in header {header}")
            columns[key] = header.index(name)
        needed = max(columns.values()) + 1
        for row in reader:
            if not row:
                continue
            where = f"{path}:{reader.line_num}: "
            if len(row) != len(header) and not (fmt.label_is_last_field and len(row) >= needed):
                raise ValueError(
                    f"{where}{len(row)} fields, header has {len(header)} "
                    f"({'csv-quoted' if fmt.quoted else 'raw, unquoted'} TSV expected)"
                )
            raw_label = row[-1] if fmt.label_is_last_field else row[columns["label"]]
            text_b = row[columns["text_b"]] if "text_b" in columns else None
            examples.append(
                Example(
                    clean_text(t, row[columns["text_a"]]),
                    None if text_b is None else clean_text(t, text_b),
                    parse_label(t, raw_label, where),
                )
            )
    if not examples:
        raise ValueError(f"{path}: a header row and no examples; expected at least one row")
    return examples


def _layout_hint(root: Path, layout: LocalLayout) -> str:
    files = [f"{root / layout.dirname}/k-shot/<k>-<seed>/{{train,dev}}.tsv"]
    if layout.test is not None:
        files.append(f"{root / layout.dirname}/{layout.test[0]}")
    return "expected layout: " + " and ".join(files)


def load_split(
    task: Task | str,
    data_dir: str | os.PathLike | None = None,
    split: str = "train",
    k: int = 16,
    seed: int = 13,
) -> list[Example]:
    """Examples of one split from a local LM-BFF-style directory.

    split: "train" or "dev" (the k-shot files of `k`-`seed`), or "test" (the task's full test
    file, see LOCAL_LAYOUTS; k and seed are ignored). data_dir: the directory holding the
    dataset folders, or None to use SECFWT_DATA_DIR. A missing folder or file is a
    FileNotFoundError naming the path and the expected layout.
    """
    t = as_task(task)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; accepted: {', '.join(SPLITS)}")
    layout = _layout(t)
    root = resolve_data_dir(data_dir)
    task_dir = root / layout.dirname
    if not task_dir.is_dir():
        raise FileNotFoundError(
            f"no folder {str(task_dir)!r} for task {t.name!r}; {_layout_hint(root, layout)}"
        )
    if split == "test":
        if layout.test is None:
            raise FileNotFoundError(
                f"no local test file for task {t.name!r} in {str(task_dir)!r}: "
                f"{layout.missing_note}"
            )
        name, fmt = layout.test
        path = task_dir / name
    else:
        fmt = layout.kshot
        path = task_dir / "k-shot" / f"{k}-{seed}" / f"{split}.tsv"
    if not path.is_file():
        kshot = task_dir / "k-shot"
        have = sorted(p.name for p in kshot.iterdir() if p.is_dir()) if kshot.is_dir() else []
        raise FileNotFoundError(
            f"no file {str(path)!r}; {_layout_hint(root, layout)}; "
            f"k-shot folders present: {', '.join(have) or 'none'}"
        )
    return read_tsv(path, t, fmt)


def _hf_source(task: Task) -> HfSource:
    return _entry(HF_SOURCES, task, "Hugging Face source")


def examples_from_hf(task: Task | str, dataset: Iterable[dict]) -> list[Example]:
    """Examples from a Hugging Face dataset (or any iterable of row dicts) with the columns of
    `HF_SOURCES[task]` and an integer `label` column.

    Rows labelled -1 (no gold label: SNLI's unresolved pairs, GLUE test splits) are dropped, as
    BBT does; a dataset with no labelled row left is a ValueError.
    """
    t = as_task(task)
    src = _hf_source(t)
    wanted = [c for c in (src.text_a, src.text_b, "label") if c is not None]
    columns = getattr(dataset, "column_names", None)
    if columns is not None:
        missing = [c for c in wanted if c not in columns]
        if missing:
            raise ValueError(
                f"dataset for task {t.name!r} lacks columns {missing}; it has {list(columns)}"
            )
    examples = []
    for i, row in enumerate(dataset):
        if row["label"] is not None and int(row["label"]) < 0:
            continue
        examples.append(
            Example(
                clean_text(t, row[src.text_a]),
                None if src.text_b is None else clean_text(t, row[src.text_b]),
                parse_label(t, row["label"], f"row {i}: "),
            )
        )
    if not examples:
        raise ValueError(f"no labelled rows in the dataset for task {t.name!r} (all labels are -1)")
    return examples


def load_hf(
    task: Task | str,
    split: str = "train",
    *,
    cache_dir: str | os.PathLike | None = None,
    load_fn: Callable | None = None,
) -> list[Example]:
    """Examples from the Hugging Face hub (`datasets.load_dataset`, see HF_SOURCES).

    split: "train", or "test" for the split BBT tests on (GLUE validation for sst2, mrpc, rte).
    load_fn: replaces `datasets.load_dataset` (same call signature), e.g. in tests.
    Any failure to load is a DatasetLoadError naming the dataset and the cause.
    """
    t = as_task(task)
    if split not in HF_SPLITS:
        raise ValueError(f"unknown Hugging Face split {split!r}; accepted: {', '.join(HF_SPLITS)}")
    src = _hf_source(t)
    hf_split = "train" if split == "train" else src.test_split
    hub_id = src.path if src.name is None else f"{src.path}/{src.name}"
    if load_fn is None:
        try:
            from datasets import load_dataset as load_fn
        except ImportError as err:
            raise DatasetLoadError(
                f"cannot import the `datasets` package to load {hub_id!r}: {err}"
            ) from err
    try:
        dataset = load_fn(src.path, src.name, split=hf_split, cache_dir=cache_dir)
    except Exception as err:
        raise DatasetLoadError(
            f"could not load Hugging Face dataset {hub_id!r} split {hf_split!r} for task "
            f"{t.name!r} ({type(err).__name__}: {err}); if the hub is unreachable, use a local "
            f"directory instead: load_split({t.name!r}, data_dir) or {ENV_DATA_DIR}=<dir>"
        ) from err
    return examples_from_hf(t, dataset)


def true_few_shot(
    examples: Sequence[Example], k: int, seed: int
) -> tuple[list[Example], list[Example]]:
    """BBT's "true few-shot" split of a full training set: (train, dev), k per class each.

    Shuffle the indices with numpy's legacy generator seeded with `seed` (BBT calls
    `np.random.seed(seed)` then `np.random.shuffle`), walk them, and give each example to train
    until its class has k there, then to dev until it has k there (Sun et al. 2022,
    `construct_true_few_shot_data`). Train and dev are disjoint and keep the shuffled order.
    A class with fewer than 2k examples is a ValueError (BBT would silently return fewer).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    counts = Counter(ex.label for ex in examples)
    short = {label: n for label, n in sorted(counts.items()) if n < 2 * k}
    if short:
        raise ValueError(
            f"true few-shot with k={k} needs {2 * k} examples per class; too few in classes "
            + ", ".join(f"{label} ({n})" for label, n in short.items())
        )
    order = np.random.RandomState(seed).permutation(len(examples))
    train, dev = [], []
    n_train: Counter = Counter()
    n_dev: Counter = Counter()
    for i in order:
        ex = examples[int(i)]
        if n_train[ex.label] < k:
            train.append(ex)
            n_train[ex.label] += 1
        elif n_dev[ex.label] < k:
            dev.append(ex)
            n_dev[ex.label] += 1
    return train, dev
