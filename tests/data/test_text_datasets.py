from pathlib import Path

import pytest
import torch

from contrastkit.data.text import (TextDataset, TextSplits, list_text_datasets, load_text_dataset,
                                   text_splits_from_hf)
from contrastkit.errors import DatasetError, InputError

SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
needs_shared_text = pytest.mark.skipif(
    not (SHARED_DATA / "stsb").is_dir() or not (SHARED_DATA / "text").is_dir(),
    reason=f"the shared text data ({SHARED_DATA}/stsb and /text) is absent; it exists only on the project's "
           "build machines")


# ------------------------------------------------------------------------------ real data (shared folder)


@needs_shared_text
def test_stsb_reads_all_splits_with_scores_from_0_to_5():
    splits = load_text_dataset("stsb", root=SHARED_DATA)
    assert (len(splits.train), len(splits.extra["dev"]), len(splits.test)) == (5749, 1500, 1379)
    assert splits.train.kind == "scored_pairs" and splits.classes == []
    for dataset in (splits.train, splits.extra["dev"], splits.test):
        assert dataset.scores.dtype == torch.float32
        assert float(dataset.scores.min()) == 0.0 and float(dataset.scores.max()) == 5.0
    assert splits.train.texts[0] == "A plane is taking off." and splits.train.pairs[0] == "An air plane is taking off."
    # A headlines row with two trailing source fields: the pair and its score still come from fields 4-6.
    row = splits.train.texts.index("Driver backs into stroller with child, drives off")
    assert splits.train.pairs[row] == "Driver backs into mom, stroller with child then drives off"
    assert float(splits.train.scores[row]) == 4.0


@needs_shared_text
def test_sst2_reads_labelled_sentences():
    splits = load_text_dataset("sst2", root=SHARED_DATA)
    assert (len(splits.train), len(splits.extra["dev"]), len(splits.test)) == (60614, 6735, 872)
    assert splits.classes == ["negative", "positive"] and splits.train.kind == "sentences"
    assert torch.bincount(splits.test.labels).tolist() == [428, 444]
    assert splits.test.texts[0] == "it 's a charming and often affecting journey ."  # trailing space stripped


@needs_shared_text
def test_agnews_reads_four_balanced_classes():
    splits = load_text_dataset("agnews", root=SHARED_DATA)
    # The README calls train "a 10k subset"; the file holds 10,001 rows, all kept.
    assert (len(splits.train), len(splits.test)) == (10_001, 7600)
    assert splits.classes == ["Business", "Sci/Tech", "Sports", "World"]
    assert torch.bincount(splits.test.labels).tolist() == [1900] * 4
    assert splits.train.labels.dtype == torch.int64 and splits.train.scores is None


@needs_shared_text
def test_joined_names_give_an_unlabelled_corpus_of_train_sentences():
    sst2, stsb = (load_text_dataset(name, root=SHARED_DATA) for name in ("sst2", "stsb"))
    joined = load_text_dataset("sst2+stsb", root=SHARED_DATA)
    assert joined.name == "sst2+stsb" and joined.test is None and joined.classes == []
    assert joined.train.kind == "sentences" and joined.train.labels is None
    assert joined.train.texts == sst2.train.texts + stsb.train.texts


def test_missing_shared_files_say_where_and_what_to_pass(tmp_path):
    with pytest.raises(DatasetError, match="sts-train.csv does not exist") as error:
        load_text_dataset("stsb", root=tmp_path)
    assert "root=" in str(error.value) and "text/" in str(error.value) and "hf:" in str(error.value)
    with pytest.raises(DatasetError, match=r"SST-2.*train\.tsv does not exist.*hf:stanfordnlp/sst2"):
        load_text_dataset("sst2", root=tmp_path)
    with pytest.raises(DatasetError, match=r"dev\.tsv does not exist.*hf:fancyzhx/ag_news"):
        load_text_dataset("agnews", root=tmp_path)


# ----------------------------------------------------------------------------------------- local files


def _write(path: Path, text: str | bytes) -> str:
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return str(path)


def test_txt_is_one_sentence_per_line(tmp_path):
    path = _write(tmp_path / "corpus.txt", "\ufeff  First sentence.\r\n\n   \nSecond, with  inner  spaces. \nÜber\n")
    splits = load_text_dataset(path)
    assert splits.name == "corpus" and splits.test is None and splits.classes == []
    assert splits.train.texts == ["First sentence.", "Second, with  inner  spaces.", "Über"]
    assert splits.train.kind == "sentences"


def test_tsv_pairs_with_and_without_header(tmp_path):
    plain = load_text_dataset(_write(tmp_path / "pairs.tsv", "a cat\ta kitten\n\na dog\ta puppy\n")).train
    assert plain.kind == "pairs" and plain.texts == ["a cat", "a dog"] and plain.pairs == ["a kitten", "a puppy"]
    headed = load_text_dataset(_write(tmp_path / "headed.tsv", "Anchor\tPositive\na cat\ta kitten\n")).train
    assert headed.texts == ["a cat"] and headed.pairs == ["a kitten"]


def test_scored_pairs_with_numeric_third_column(tmp_path):
    scored = load_text_dataset(_write(tmp_path / "scored.tsv", "a\tb\t4.5\nc\td\t0\ne\tf\t-1e-1\n")).train
    assert scored.kind == "scored_pairs" and scored.scores.tolist() == pytest.approx([4.5, 0.0, -0.1])
    # An unfamiliar header is still recognised: its third field alone is not a number.
    headed = load_text_dataset(_write(tmp_path / "headed.tsv", "left\tright\tsim\na\tb\t1\nc\td\t2\n")).train
    assert headed.kind == "scored_pairs" and headed.texts == ["a", "c"] and headed.scores.tolist() == [1.0, 2.0]


def test_triplets_when_the_third_column_is_text(tmp_path):
    path = _write(tmp_path / "nli.tsv", "anchor\tpositive\tnegative\nA man sleeps.\tA person rests.\t42\n"
                                        "Kids play.\tChildren play.\tNobody plays.\n")
    triplets = load_text_dataset(path).train
    assert triplets.kind == "triplets" and triplets.negatives == ["42", "Nobody plays."]
    assert triplets.subset(torch.tensor([1])).negatives == ["Nobody plays."]


def test_csv_uses_quotes_for_commas(tmp_path):
    path = _write(tmp_path / "pairs.csv", 'sentence1,sentence2,score\n"Well, yes.","Yes, well.",3.5\n'
                                          'plain,"a ""quoted"" word",1\n')
    scored = load_text_dataset(path).train
    assert scored.texts == ["Well, yes.", "plain"] and scored.pairs == ["Yes, well.", 'a "quoted" word']
    assert scored.scores.tolist() == [3.5, 1.0]


def test_tsv_keeps_quotes_literal(tmp_path):
    pairs = load_text_dataset(_write(tmp_path / "q.tsv", 'he said "hi\tshe said "bye"\n')).train
    assert pairs.texts == ['he said "hi'] and pairs.pairs == ['she said "bye"']


def test_labelled_sentences_under_a_text_label_header(tmp_path):
    splits = load_text_dataset(_write(tmp_path / "labels.tsv", "text\tlabel\ngood\t1\nbad\t0\nfine\t10\n"))
    assert splits.classes == ["0", "1", "10"] and splits.train.labels.tolist() == [1, 0, 2]
    assert splits.train.kind == "sentences"


def test_joined_files_and_paths_with_plus(tmp_path):
    first = _write(tmp_path / "a.txt", "one\ntwo\n")
    second = _write(tmp_path / "b.tsv", "three\tthree again\n")
    joined = load_text_dataset(f"{first} + {second}")
    assert joined.train.texts == ["one", "two", "three"] and joined.test is None
    plus_file = _write(tmp_path / "c+d.txt", "kept whole\n")  # an existing file wins over splitting on +
    assert load_text_dataset(plus_file).train.texts == ["kept whole"]


# ------------------------------------------------------------------------------------------ bad inputs


def test_unknown_name_suggests_a_close_match():
    with pytest.raises(DatasetError, match=r"unknown text dataset 'stsbb'; did you mean 'stsb'\?.*hf:NAME"):
        load_text_dataset("stsbb")
    assert {"stsb", "sst2", "agnews"} <= set(list_text_datasets())


def test_missing_and_unsupported_files(tmp_path):
    with pytest.raises(DatasetError, match=r"nowhere\.tsv does not exist"):
        load_text_dataset(str(tmp_path / "nowhere.tsv"))
    with pytest.raises(DatasetError, match="is a folder"):
        load_text_dataset(str(tmp_path))
    with pytest.raises(DatasetError, match=r"\.json file"):
        load_text_dataset(_write(tmp_path / "data.json", "{}"))
    with pytest.raises(DatasetError, match="empty part"):
        load_text_dataset("sst2++agnews")


def test_ragged_rows_name_the_line(tmp_path):
    with pytest.raises(DatasetError, match=r"line 3 has 3 field\(s\) where line 1 has 2"):
        load_text_dataset(_write(tmp_path / "ragged.tsv", "a\tb\nc\td\ne\tf\tg\n"))
    with pytest.raises(DatasetError, match="rename it to .tsv"):
        load_text_dataset(_write(tmp_path / "tabs.csv", "a,b\nc\td,e,f\n"))
    with pytest.raises(DatasetError, match="line 2: column 2 is empty"):
        load_text_dataset(_write(tmp_path / "empty.tsv", "a\tb\nc\t \n"))
    with pytest.raises(DatasetError, match="has 4 field"):
        load_text_dataset(_write(tmp_path / "wide.tsv", "a\tb\tc\td\n"))


def test_ambiguous_tables_are_refused(tmp_path):
    with pytest.raises(DatasetError, match=r"score on 3 of 4 rows, but line 2 holds 'n/a'; make it a number"):
        load_text_dataset(_write(tmp_path / "bad_score.tsv", "a\tb\t1\nc\td\tn/a\ne\tf\t2\ng\th\t3\n"))
    with pytest.raises(DatasetError, match="text<sep>label"):
        load_text_dataset(_write(tmp_path / "labels.tsv", "good film\t1\nbad film\t0\n"))
    with pytest.raises(DatasetError, match="no sentences"):
        load_text_dataset(_write(tmp_path / "blank.txt", "\n  \n"))


def test_non_utf8_file_names_file_and_line(tmp_path):
    path = _write(tmp_path / "latin1.txt", "fine\ncaf\xe9 au lait\n".encode("latin-1"))
    with pytest.raises(DatasetError, match=r"latin1\.txt is not valid UTF-8: line 2, byte 4 is 0xe9.*iconv"):
        load_text_dataset(path)


# ------------------------------------------------------------------------------------------ TextDataset


def test_text_dataset_validates_and_subsets():
    data = TextDataset(["a", "b", "c"], ["A", "B", "C"], scores=torch.tensor([0.0, 2.5, 5.0]))
    part = data.subset([2, 0, 2])
    assert part.texts == ["c", "a", "c"] and part.pairs == ["C", "A", "C"] and part.scores.tolist() == [5.0, 0.0, 5.0]
    assert len(data.subset([])) == 0
    with pytest.raises(InputError, match="pairs holds 2 sentences but texts holds 3"):
        TextDataset(["a", "b", "c"], ["A", "B"])
    with pytest.raises(InputError, match="int64"):
        TextDataset(["a"], labels=torch.tensor([1.0]))
    with pytest.raises(InputError, match="negatives but no pairs"):
        TextDataset(["a"], negatives=["b"])
    with pytest.raises(InputError, match="NaN"):
        TextDataset(["a"], ["b"], scores=torch.tensor([float("nan")]))
    with pytest.raises(InputError, match="indices in"):
        data.subset([3])
    with pytest.raises(InputError, match="integer indices"):
        data.subset(torch.tensor([0.5]))


# -------------------------------------------------------------------------------- Hugging Face mapping


def test_hf_column_mapping_on_in_memory_datasets():
    datasets = pytest.importorskip("datasets", reason="the Hugging Face `datasets` package is not installed")
    Dataset, DatasetDict = datasets.Dataset, datasets.DatasetDict
    sst = DatasetDict({
        "train": Dataset.from_dict({"sentence": [" good ", "bad"], "label": [1, 0]}, features=datasets.Features(
            {"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=["negative", "positive"])})),
        "validation": Dataset.from_dict({"sentence": ["fine"], "label": [1]}),
        "test": Dataset.from_dict({"sentence": ["hidden"], "label": [-1]}),  # GLUE hides test labels
    })
    splits = text_splits_from_hf("hf:sst2", sst)
    assert isinstance(splits, TextSplits) and splits.classes == ["negative", "positive"]
    assert splits.train.texts == ["good", "bad"] and splits.train.labels.tolist() == [1, 0]
    assert splits.test.texts == ["fine"] and splits.extra["test"].labels is None

    glue_stsb = DatasetDict({"train": Dataset.from_dict({"sentence1": ["a"], "sentence2": ["b"], "label": [4.2]})})
    scored = text_splits_from_hf("hf:glue", glue_stsb)
    assert scored.train.kind == "scored_pairs" and scored.test is None
    assert scored.train.scores.tolist() == pytest.approx([4.2])

    triplets = text_splits_from_hf("hf:nli", DatasetDict({"train": Dataset.from_dict(
        {"anchor": ["a"], "positive": ["p"], "negative": ["n"]})}))
    assert triplets.train.kind == "triplets" and triplets.classes == []

    nli = text_splits_from_hf("hf:snli", DatasetDict({
        "train": Dataset.from_dict({"premise": ["p", "q"], "hypothesis": ["h", "i"], "label": [0, 2]}),
        "test": Dataset.from_dict({"premise": ["r"], "hypothesis": ["j"], "label": [1]})}))
    assert nli.train.kind == "pairs" and nli.classes == ["0", "1", "2"] and nli.test.labels.tolist() == [1]

    named = text_splits_from_hf("hf:news", DatasetDict({
        "train": Dataset.from_dict({"text": ["x", "y"], "label": ["World", "Sports"]}),
        "test": Dataset.from_dict({"text": ["z"], "label": ["Sports"]})}))
    assert named.classes == ["Sports", "World"] and named.train.labels.tolist() == [1, 0]

    with pytest.raises(DatasetError, match="none of the layouts"):
        text_splits_from_hf("hf:odd", DatasetDict({"train": Dataset.from_dict({"body": ["a"]})}))
    with pytest.raises(DatasetError, match="no train split"):
        text_splits_from_hf("hf:odd", DatasetDict({"test": Dataset.from_dict({"text": ["a"]})}))
