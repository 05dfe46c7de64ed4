"""Specification of the data loaders: local LM-BFF / RLPrompt directories, Hugging Face
datasets, and BBT's true few-shot split.

Core tests write tiny files in each source's format to a temporary directory. Tests marked
`data` read the real directory from SECFWT_DATA_DIR, or by default <repo>/../shared/data, and
skip when it is absent.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from secfwt_jax.tasks import (
    LOCAL_LAYOUTS,
    DatasetLoadError,
    Example,
    encode,
    examples_from_hf,
    get_task,
    load_full_train,
    load_hf,
    load_split,
    load_tokenizer,
    true_few_shot,
)

REPO = Path(__file__).resolve().parents[1]
BBT_TASKS = ("sst2", "yelp", "agnews", "dbpedia", "mrpc", "rte", "snli")


def shared_dir(env: str, *default: str) -> Path:
    return Path(os.environ.get(env) or REPO.parent.joinpath("shared", *default))


@pytest.fixture(scope="module")
def real_data_dir() -> Path:
    path = shared_dir("SECFWT_DATA_DIR", "data")
    if not path.is_dir():
        pytest.skip(f"real data directory not found at {path} (set SECFWT_DATA_DIR)")
    return path


@pytest.fixture(scope="module")
def roberta():
    path = shared_dir("SECFWT_TOKENIZER", "tokenizer", "roberta-base")
    if not path.is_dir():
        pytest.skip(f"real RoBERTa tokenizer not found at {path} (set SECFWT_TOKENIZER)")
    return load_tokenizer(path)


def write(path: Path, lines: list[str], *, bom: bool = False, crlf: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    end = "\r\n" if crlf else "\n"
    path.write_bytes((("\ufeff" if bom else "") + end.join(lines) + end).encode("utf-8"))


def kshot(root: Path, dirname: str, split: str = "train", k: int = 2, seed: int = 1) -> Path:
    return root / dirname / "k-shot" / f"{k}-{seed}" / f"{split}.tsv"


SNLI_HEADER = ("index\tcaptionID\tpairID\tsentence1_binary_parse\tsentence2_binary_parse\t"
               "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """Tiny copies of each source's files, with the quirks of the real ones."""
    # LM-BFF raw TSV: a lone double quote is text.
    write(kshot(tmp_path, "sst2"), ["sentence\tlabel", '" a lone quote stays\t1', "dull .\t0"])
    write(tmp_path / "sst2" / "glue_dev_lmbff_order.tsv", ["sentence\tlabel", "fine .\t1"])
    write(tmp_path / "sst2" / "glue_train.tsv", ["label\tsentence", "0\tbad", "1\tgood"], crlf=True)
    # LM-BFF MRPC: UTF-8 BOM, GLUE's raw columns, unbalanced quotes.
    write(kshot(tmp_path, "mrpc"), [
        "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String",
        '1\t11\t12\tHe said " it is .\tIt is , he said .',
        "0\t13\t14\tNo .\tYes .",
    ], bom=True)
    # LM-BFF RTE: label names.
    write(kshot(tmp_path, "rte"), [
        "index\tsentence1\tsentence2\tlabel",
        "0\tA man sleeps.\tA person sleeps.\tentailment",
        "1\tA man sleeps.\tA man runs.\tnot_entailment",
    ])
    # LM-BFF SNLI: 11 or 15 fields, gold label last.
    write(kshot(tmp_path, "snli"), [
        SNLI_HEADER,
        "0\tc\tp\t( a )\t( b )\t(ROOT a)\t(ROOT b)\tA dog runs.\tAn animal moves.\tentailment"
        "\tentailment",
        "1\tc\tp\t( a )\t( b )\t(ROOT a)\t(ROOT b)\tA dog runs.\tA cat sleeps."
        + "\tcontradiction" * 5 + "\tneutral",
    ])
    # RLPrompt files: csv-quoted (doubled quotes inside), CRLF for dbpedia and test files.
    write(kshot(tmp_path, "agnews"), ["text\tlabel", '"A ""quoted"" word"\t2', "Plain\t0"])
    write(tmp_path / "agnews" / "test.tsv", ["sentence\tlabel", "Stocks up\t2"], crlf=True)
    write(kshot(tmp_path, "dbpedia"), ["sentence\tlabel", '" Has\ta tab"\t3', " Plain \t13"],
          crlf=True)
    write(kshot(tmp_path, "yelp_polarity"), ["text\tlabel", '"Good.\\n\\nGreat."\t1'])
    return tmp_path


# ---------------------------------------------------------------------------------------------
# Local directories


def test_lmbff_files_are_read_raw_so_a_lone_quote_stays_text(data_dir):
    assert load_split("sst2", data_dir, "train", k=2, seed=1) == [
        Example('" a lone quote stays', None, 1), Example("dull .", None, 0),
    ]


def test_mrpc_bom_is_dropped_and_pairs_come_from_the_string_columns(data_dir):
    assert load_split("mrpc", data_dir, "train", k=2, seed=1) == [
        Example('He said " it is .', "It is , he said .", 1), Example("No .", "Yes .", 0),
    ]


def test_rte_label_names_map_to_hugging_face_ids(data_dir):
    assert [ex.label for ex in load_split("rte", data_dir, k=2, seed=1)] == [0, 1]


def test_snli_label_is_the_last_field_of_11_and_15_field_rows(data_dir):
    assert load_split("snli", data_dir, k=2, seed=1) == [
        Example("A dog runs.", "An animal moves.", 0), Example("A dog runs.", "A cat sleeps.", 1),
    ]


def test_rlprompt_fields_are_csv_unquoted(data_dir):
    assert load_split("agnews", data_dir, k=2, seed=1)[0] == Example('A "quoted" word', None, 2)


def test_dbpedia_reads_crlf_and_a_quoted_field_with_a_tab_and_strips_text(data_dir):
    assert load_split("dbpedia", data_dir, k=2, seed=1) == [
        Example("Has\ta tab", None, 3), Example("Plain", None, 13),
    ]


def test_yelp_escaped_newlines_become_spaces(data_dir):
    assert load_split("yelp", data_dir, k=2, seed=1) == [Example("Good.  Great.", None, 1)]


def test_dev_split_reads_the_dev_file(data_dir):
    write(kshot(data_dir, "sst2", "dev"), ["sentence\tlabel", "dev row\t0"])
    assert load_split("sst2", data_dir, "dev", k=2, seed=1) == [Example("dev row", None, 0)]


def test_test_split_reads_the_task_test_file(data_dir):
    assert load_split("agnews", data_dir, "test") == [Example("Stocks up", None, 2)]
    assert load_split("sst2", data_dir, "test") == [Example("fine .", None, 1)]


def test_full_train_reads_the_full_training_file(data_dir):
    assert load_full_train("sst2", data_dir) == [Example("bad", None, 0), Example("good", None, 1)]


def test_data_dir_comes_from_the_environment_variable(data_dir, monkeypatch):
    monkeypatch.setenv("SECFWT_DATA_DIR", str(data_dir))
    assert len(load_split("sst2", k=2, seed=1)) == 2


def test_no_data_dir_and_no_environment_variable_raises(monkeypatch):
    monkeypatch.delenv("SECFWT_DATA_DIR", raising=False)
    with pytest.raises(ValueError, match="no data directory: pass data_dir or set SECFWT_DATA_DIR"):
        load_split("sst2")


def test_missing_data_dir_raises_file_not_found_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data directory '.*/nowhere' does not exist"):
        load_split("sst2", tmp_path / "nowhere")


def test_missing_task_folder_names_the_path_and_the_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no folder '.*/yelp_polarity'.*k-shot/<k>-<seed>"):
        load_split("yelp", tmp_path)


def test_missing_seed_names_the_file_and_lists_present_folders(data_dir):
    with pytest.raises(FileNotFoundError, match=r"16-13/train.tsv'.*folders present: 2-1"):
        load_split("sst2", data_dir, "train", k=16, seed=13)


def test_task_without_a_local_test_file_says_so(data_dir):
    with pytest.raises(FileNotFoundError, match=r"no local test file for task 'yelp'.*load_hf"):
        load_split("yelp", data_dir, "test")


def test_unknown_split_raises(data_dir):
    with pytest.raises(ValueError, match="unknown split 'valid'; accepted: train, dev, test"):
        load_split("sst2", data_dir, "valid")


def test_bad_label_raises_naming_file_line_and_accepted_values(data_dir):
    write(kshot(data_dir, "rte"), ["index\tsentence1\tsentence2\tlabel", "0\ta\tb\tmaybe"])
    with pytest.raises(ValueError, match=r"train.tsv:2: bad label 'maybe'.*entailment"):
        load_split("rte", data_dir, k=2, seed=1)


def test_row_with_a_wrong_field_count_raises(data_dir):
    write(kshot(data_dir, "sst2"), ["sentence\tlabel", "one\ttwo\t1"])
    with pytest.raises(ValueError, match=r"train.tsv:2: 3 fields, header has 2"):
        load_split("sst2", data_dir, k=2, seed=1)


def test_missing_column_raises_naming_the_header(data_dir):
    write(kshot(data_dir, "sst2"), ["text\tlabel", "one\t1"])
    with pytest.raises(ValueError, match=r"no column 'sentence' in header \['text', 'label'\]"):
        load_split("sst2", data_dir, k=2, seed=1)


# ---------------------------------------------------------------------------------------------
# Hugging Face datasets (the hub is not reachable here: datasets are built in the test)


def hf_dataset(columns: dict):
    datasets = pytest.importorskip("datasets")
    return datasets.Dataset.from_dict(columns)


def test_examples_from_hf_single_sentence_task():
    ds = hf_dataset({"sentence": ["a fine film ", "dull"], "label": [1, 0], "idx": [0, 1]})
    # the trailing space stays, as in BBT's rows (only DBpedia's content is stripped)
    assert examples_from_hf("sst2", ds) == [
        Example("a fine film ", None, 1), Example("dull", None, 0),
    ]


def test_examples_from_hf_pair_task():
    ds = hf_dataset({"sentence1": ["He said ."], "sentence2": ["Said he ."], "label": [1],
                     "idx": [0]})
    assert examples_from_hf("mrpc", ds) == [Example("He said .", "Said he .", 1)]


def test_examples_from_hf_drops_rows_without_gold_label():
    ds = hf_dataset({"premise": ["p1", "p2", "p3"], "hypothesis": ["h1", "h2", "h3"],
                     "label": [2, -1, 0]})
    assert examples_from_hf("snli", ds) == [Example("p1", "h1", 2), Example("p3", "h3", 0)]


def test_examples_from_hf_dbpedia_uses_the_content_column():
    ds = hf_dataset({"title": ["Acme"], "content": [" Acme is a company."], "label": [0]})
    assert examples_from_hf("dbpedia", ds) == [Example("Acme is a company.", None, 0)]


def test_examples_from_hf_without_labelled_rows_raises():
    ds = hf_dataset({"sentence": ["hidden"], "label": [-1], "idx": [0]})
    with pytest.raises(ValueError, match="no labelled rows"):
        examples_from_hf("sst2", ds)


def test_examples_from_hf_missing_column_raises():
    ds = hf_dataset({"text": ["a"], "label": [0]})
    with pytest.raises(ValueError, match=r"lacks columns \['sentence'\]"):
        examples_from_hf("sst2", ds)


def test_load_hf_test_split_is_the_split_bbt_evaluates_on():
    calls = []

    def fake_load(path, name, split, cache_dir=None):
        calls.append((path, name, split))
        return hf_dataset({"sentence1": ["a"], "sentence2": ["b"], "label": [0], "idx": [0]})

    assert load_hf("rte", "test", load_fn=fake_load) == [Example("a", "b", 0)]
    load_hf("rte", "train", load_fn=fake_load)
    assert calls == [("glue", "rte", "validation"), ("glue", "rte", "train")]


def test_load_hf_unreachable_hub_raises_dataset_load_error():
    def unreachable(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'glue' on the Hub")

    with pytest.raises(DatasetLoadError, match=r"'glue/sst2' split 'validation'.*SECFWT_DATA_DIR"):
        load_hf("sst2", "test", load_fn=unreachable)


@pytest.mark.slow
def test_load_hf_offline_through_the_real_datasets_package_raises_clearly(tmp_path):
    pytest.importorskip("datasets")
    code = (
        "from secfwt_jax.tasks import load_hf, DatasetLoadError\n"
        "try:\n    load_hf('sst2', 'test')\n"
        "except DatasetLoadError as e:\n    print('DatasetLoadError', e)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               HF_HOME=str(tmp_path), HF_DATASETS_CACHE=str(tmp_path / "datasets"))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert "DatasetLoadError could not load Hugging Face dataset 'glue/sst2'" in out.stdout, (
        out.stdout + out.stderr
    )


def test_load_hf_unknown_split_raises():
    with pytest.raises(ValueError, match="accepted: train, test"):
        load_hf("sst2", "validation", load_fn=lambda *a, **k: None)


# ---------------------------------------------------------------------------------------------
# BBT's true few-shot split


def labelled(counts: dict[int, int]) -> list[Example]:
    return [Example(f"{label}-{i}", None, label) for label, n in counts.items() for i in range(n)]


def test_true_few_shot_gives_k_per_class_to_train_and_to_dev():
    train, dev = true_few_shot(labelled({0: 50, 1: 20, 2: 9}), k=4, seed=0)
    assert Counter(ex.label for ex in train) == Counter(ex.label for ex in dev) == {
        0: 4, 1: 4, 2: 4,
    }


def test_true_few_shot_train_and_dev_are_disjoint():
    train, dev = true_few_shot(labelled({0: 10, 1: 10}), k=5, seed=3)
    assert not {ex.text_a for ex in train} & {ex.text_a for ex in dev}


def test_true_few_shot_is_fixed_by_the_seed():
    data = labelled({0: 30, 1: 30})
    assert true_few_shot(data, 4, seed=7) == true_few_shot(data, 4, seed=7)
    assert true_few_shot(data, 4, seed=7) != true_few_shot(data, 4, seed=8)


def test_true_few_shot_fills_train_then_dev_along_bbts_shuffle():
    data = labelled({0: 6, 1: 6})
    np.random.seed(5)  # BBT: np.random.seed(seed) ... np.random.shuffle(all_indices)
    order = list(range(len(data)))
    np.random.shuffle(order)
    expected_train = [i for i in order if data[i].label == 0][:2] + [
        i for i in order if data[i].label == 1][:2]
    train, _ = true_few_shot(data, k=2, seed=5)
    assert sorted(data.index(ex) for ex in train) == sorted(expected_train)
    assert [data.index(ex) for ex in train] == [i for i in order if i in expected_train]


def test_true_few_shot_class_with_fewer_than_2k_examples_raises():
    with pytest.raises(ValueError, match=r"needs 8 examples per class; too few in classes 1 \(7\)"):
        true_few_shot(labelled({0: 8, 1: 7}), k=4, seed=0)


# ---------------------------------------------------------------------------------------------
# The real data (README row counts)

README_TEST_LABELS = {
    "sst2": {0: 428, 1: 444},
    "mrpc": {0: 129, 1: 279},
    "rte": {0: 146, 1: 131},
    "snli": {0: 3368, 1: 3219, 2: 3237},
    "agnews": {0: 1900, 1: 1900, 2: 1900, 3: 1900},
}


@pytest.mark.data
@pytest.mark.parametrize("name", BBT_TASKS)
def test_real_kshot_splits_have_16_per_class_for_every_seed(real_data_dir, name):
    task = get_task(name)
    folders = sorted((real_data_dir / LOCAL_LAYOUTS[name].dirname / "k-shot").glob("16-*"))
    assert folders, f"no 16-shot folders for {name}"
    for folder in folders:
        seed = int(folder.name.split("-")[1])
        for split in ("train", "dev"):
            counts = Counter(ex.label for ex in load_split(name, real_data_dir, split, 16, seed))
            assert counts == {label: 16 for label in range(task.num_labels)}, (seed, split)


@pytest.mark.data
@pytest.mark.parametrize("name", sorted(README_TEST_LABELS))
def test_real_test_files_have_the_readme_row_and_label_counts(real_data_dir, name):
    examples = load_split(name, real_data_dir, "test")
    assert Counter(ex.label for ex in examples) == README_TEST_LABELS[name]


@pytest.mark.data
@pytest.mark.parametrize("name", ["yelp", "dbpedia"])
def test_real_tasks_without_a_local_test_file_raise(real_data_dir, name):
    with pytest.raises(FileNotFoundError, match="not in the local copy"):
        load_split(name, real_data_dir, "test")


@pytest.mark.data
@pytest.mark.parametrize("name, rows", [("sst2", 67349), ("mrpc", 3668), ("rte", 2490)])
def test_real_full_training_sets_have_the_readme_row_counts(real_data_dir, name, rows):
    assert len(load_full_train(name, real_data_dir)) == rows


@pytest.mark.data
def test_real_true_few_shot_from_the_full_mrpc_training_set(real_data_dir):
    train, dev = true_few_shot(load_full_train("mrpc", real_data_dir), k=16, seed=42)
    assert Counter(ex.label for ex in train) == Counter(ex.label for ex in dev) == {0: 16, 1: 16}


@pytest.mark.data
def test_real_mrpc_batch_has_exactly_one_mask_per_row(real_data_dir, roberta):
    examples = load_split("mrpc", real_data_dir, "train", 16, 13)
    batch = encode("mrpc", examples, roberta, max_len=128)
    assert batch.input_ids.shape == (32, 128)
    assert ((batch.input_ids == roberta.mask_token_id).sum(axis=1) == 1).all()
    np.testing.assert_array_equal(batch.mask_onehot.sum(axis=1), np.ones(32, np.float32))
