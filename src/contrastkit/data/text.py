"""Text datasets for sentence-embedding training: sentences, positive pairs, scored pairs and triplets.

Every loader returns :class:`TextSplits` of :class:`TextDataset`: Python lists of sentences with
surrounding whitespace stripped and nothing else normalised (tokenising is the model's business), with
int64 class ids or float32 similarity scores as tensors. :func:`load_text_dataset` reads

* a registered name (:func:`list_text_datasets`): ``stsb``, ``sst2`` and ``agnews`` from
  ``<root>/stsb/`` and ``<root>/text/``;
* a ``.txt`` file (one sentence per line) or a ``.tsv`` / ``.csv`` file of pairs, scored pairs or
  triplets;
* ``hf:NAME`` or ``hf:NAME:CONFIG``, a Hugging Face dataset (needs the ``datasets`` package and the
  internet);
* any of these joined with ``+`` (``sst2+agnews``): the training sentences of every part as one
  unlabelled corpus, the input of unsupervised SimCSE.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from contrastkit.data.datasets import default_data_root
from contrastkit.errors import DatasetError, InputError
from contrastkit.registry import Registry, unknown_name_message

_INTEGER_DTYPES = frozenset({torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64})


@dataclass
class TextDataset:
    """Sentences, sentence pairs or triplets, with optional class labels or similarity scores.

    Example:
        >>> pairs = TextDataset(["a cat sits", "a dog runs"], pairs=["a cat is sitting", "a dog is running"])
        >>> pairs.kind, len(pairs), pairs.subset([1]).texts
        ('pairs', 2, ['a dog runs'])
    """

    texts: list[str]                    # N sentences (the first sentence of pairs)
    pairs: list[str] | None = None      # N second sentences (positives, or the other side of scored pairs)
    negatives: list[str] | None = None  # N hard negatives (triplets)
    labels: Tensor | None = None        # (N,) int64 class ids
    scores: Tensor | None = None        # (N,) float32 similarity scores (STS-B: 0 to 5)

    def __post_init__(self) -> None:
        size = len(self.texts)
        for name in ("texts", "pairs", "negatives"):
            column = getattr(self, name)
            if column is None:
                continue
            if not isinstance(column, list) or not all(isinstance(text, str) for text in column):
                raise InputError(f"TextDataset.{name} must be a list of str; got {type(column).__name__} "
                                 "(convert it with list(...) and str(...)).")
            if len(column) != size:
                raise InputError(f"TextDataset.{name} holds {len(column)} sentences but texts holds {size}; "
                                 "every column needs one entry per example.")
        if self.negatives is not None and self.pairs is None:
            raise InputError("TextDataset has negatives but no pairs: a triplet is (text, positive, hard "
                             "negative), so pass pairs= as well.")
        if self.scores is not None and (self.pairs is None or self.negatives is not None):
            raise InputError("TextDataset.scores rate sentence pairs: pass pairs= with them, and no negatives.")
        for name, dtype in (("labels", torch.int64), ("scores", torch.float32)):
            tensor = getattr(self, name)
            if tensor is None:
                continue
            if not isinstance(tensor, Tensor) or tensor.dtype != dtype or tuple(tensor.shape) != (size,):
                got = (f"{tensor.dtype} tensor of shape {tuple(tensor.shape)}" if isinstance(tensor, Tensor)
                       else type(tensor).__name__)
                raise InputError(f"TextDataset.{name} must be a ({size},) {dtype} tensor, one per sentence; "
                                 f"got a {got}.")
        if self.scores is not None and not torch.isfinite(self.scores).all():
            raise InputError("TextDataset.scores holds NaN or infinite values; every pair needs a finite score.")

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def kind(self) -> str:
        """What an example holds: "sentences", "pairs", "scored_pairs" or "triplets"."""
        if self.negatives is not None:
            return "triplets"
        if self.pairs is None:
            return "sentences"
        return "scored_pairs" if self.scores is not None else "pairs"

    def subset(self, indices: Sequence[int] | Tensor) -> TextDataset:
        """The examples at ``indices`` (a sequence or 1-D integer tensor, repeats allowed), in that order."""
        index = torch.as_tensor(indices)
        if index.dim() != 1 or (index.numel() and index.dtype not in _INTEGER_DTYPES):
            raise InputError(f"TextDataset.subset needs a 1-D sequence of integer indices; got a {index.dtype} "
                             f"tensor of shape {tuple(index.shape)}.")
        # Indices may come from a loader on the GPU; the sentences and their tensors live on the CPU.
        index = index.to("cpu", torch.int64)
        size = len(self)
        if index.numel() and (index.min() < -size or index.max() >= size):
            raise InputError(f"TextDataset.subset got indices in [{index.min()}, {index.max()}] for a dataset of "
                             f"{size} examples.")
        positions = index.tolist()

        def pick(column: list[str] | None) -> list[str] | None:
            return None if column is None else [column[i] for i in positions]

        return TextDataset(pick(self.texts), pick(self.pairs), pick(self.negatives),  # type: ignore[arg-type]
                           None if self.labels is None else self.labels[index],
                           None if self.scores is None else self.scores[index])


@dataclass
class TextSplits:
    """A text dataset's train and test splits, with its class names."""

    name: str
    train: TextDataset
    test: TextDataset | None  # None for a corpus without a test split (a .txt file)
    classes: list[str]        # class names ([] when unlabelled)
    extra: dict[str, TextDataset] = field(default_factory=dict)  # further splits, e.g. {"dev": ...}


TEXT_DATASETS: Registry[Callable[[Path], TextSplits]] = Registry("text dataset")
register_text_dataset = TEXT_DATASETS.register

_FILE_SUFFIXES = (".txt", ".tsv", ".csv")

# Finite decimal numbers only: float() would also accept "nan", "inf" or "Infinity", which are words a
# hard negative may well be.
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")

# A first row made of these names only is a header: the column names of common pair, triplet and
# labelled-sentence files.
_HEADER_NAMES = frozenset({
    "text", "sentence", "sentence1", "sentence2", "sentence_a", "sentence_b", "s1", "s2", "text1", "text2",
    "anchor", "positive", "negative", "query", "premise", "hypothesis", "question", "answer",
    "score", "similarity", "label",
})

Row = tuple[int, list[str]]  # (1-based line number, fields with surrounding whitespace stripped)


def load_text_dataset(name_or_path: str, *, root: str | os.PathLike | None = None) -> TextSplits:
    """Load a registered text dataset, a .txt / .tsv / .csv file, ``hf:NAME``, or several joined with ``+``.

    ``root`` is the folder holding ``stsb/`` and ``text/`` for the registered names (default
    :func:`~contrastkit.data.datasets.default_data_root`). A ``.tsv`` / ``.csv`` file holds 2 columns
    (text, positive), or 3: (text, other, score) when the third column is a number on every row, else
    (anchor, positive, hard negative); an optional header row is recognised, and a 2-column file with
    the header ``text``/``sentence`` and ``label`` holds labelled sentences. Names joined with ``+`` give
    every part's training sentences as one unlabelled corpus (pairs contribute their first sentences).

    Example::

        stsb = load_text_dataset("stsb", root="../shared/data")
        stsb.train.kind, len(stsb.train), len(stsb.extra["dev"])  # ("scored_pairs", 5749, 1500)
        corpus = load_text_dataset("sst2+agnews", root="../shared/data").train.texts  # unsupervised SimCSE
        triplets = load_text_dataset("nli_triplets.tsv").train  # triplets.kind == "triplets"
    """
    if name_or_path in TEXT_DATASETS:
        return TEXT_DATASETS.get(name_or_path)(Path(root).expanduser() if root is not None else default_data_root())
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return _load_file(path)
    if "+" in name_or_path:
        return _load_joined(name_or_path, root)
    if name_or_path.startswith("hf:"):
        return _load_hf(name_or_path[len("hf:"):])
    if path.is_dir():
        raise DatasetError(f"{path} is a folder; pass a .txt, .tsv or .csv file, or a registered name "
                           f"({', '.join(TEXT_DATASETS.names())}) with root= the folder holding stsb/ and text/.")
    if path.suffix.lower() in _FILE_SUFFIXES or os.sep in name_or_path or name_or_path.startswith("."):
        raise DatasetError(f"text file {path} does not exist; check the path (relative paths start from "
                           f"{Path.cwd()}).")
    raise DatasetError(unknown_name_message("text dataset", name_or_path, TEXT_DATASETS.names())
                       + " Or pass the path of a .txt, .tsv or .csv file, hf:NAME for a Hugging Face dataset, "
                       "or names joined with '+'.")


def list_text_datasets() -> list[str]:
    return TEXT_DATASETS.names() + ["<path to a .txt, .tsv or .csv file>", "hf:<Hugging Face dataset id>",
                                    "<names or paths joined with +>"]


# ----------------------------------------------------------------------------------------------- files


def _read_text(path: Path) -> str:
    """The file decoded as UTF-8, without a leading byte-order mark (Excel writes one, and it would stick
    to the first sentence or header name since str.strip leaves it)."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DatasetError(f"cannot read {path}: {error}.") from error
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - data.rfind(b"\n", 0, error.start)
        raise DatasetError(
            f"{path} is not valid UTF-8: line {line}, byte {column} is 0x{data[error.start]:02x} ({error.reason}). "
            f"Text files are read as UTF-8; convert this one first, e.g. `iconv -f latin1 -t utf-8 {path.name}` "
            "if it is Latin-1.") from error


def _tsv_rows(path: Path) -> list[Row]:
    """Tab-separated rows, blank lines skipped. Quotes are literal: STS-B and SST-2 hold unbalanced ones."""
    return [(number, [value.strip() for value in line.split("\t")])
            for number, line in enumerate(_read_text(path).split("\n"), 1) if line.strip()]


def _csv_rows(path: Path) -> list[Row]:
    """Comma-separated rows through the csv module (quoted fields may hold commas), blank rows skipped."""
    reader = csv.reader(io.StringIO(_read_text(path), newline=""))
    rows: list[Row] = []
    try:
        for values in reader:
            if any(value.strip() for value in values):
                rows.append((reader.line_num, [value.strip() for value in values]))
    except csv.Error as error:
        raise DatasetError(f"{path} line {reader.line_num} is not valid CSV ({error}); fix that row.") from error
    return rows


def _check_width(path: Path, rows: list[Row], width: int, layout: str) -> None:
    for line, values in rows:
        if len(values) != width:
            hint = ""
            if path.suffix.lower() == ".csv" and any("\t" in value for value in values):
                hint = " The row holds tabs: if the file is tab-separated, rename it to .tsv."
            raise DatasetError(f"{path} line {line} has {len(values)} field(s) where {layout} has {width}; "
                               f"fix or remove that row.{hint}")


def _check_sentences(path: Path, rows: list[Row], columns: int) -> None:
    for line, values in rows:
        for column, value in enumerate(values[:columns], 1):
            if not value:
                raise DatasetError(f"{path} line {line}: column {column} is empty; every row needs a sentence "
                                   "there. Fix or remove that row.")


def _is_number(value: str) -> bool:
    return _NUMBER.fullmatch(value) is not None


def _class_ids(values: list[str], classes: list[str], path: Path, rows: list[Row]) -> Tensor:
    """Class names to int64 ids in ``classes``; a name outside them is an error naming its line."""
    index = {name: i for i, name in enumerate(classes)}
    for value, (line, _) in zip(values, rows):
        if value not in index:
            raise DatasetError(f"{path} line {line} has the label {value!r}, not one of {classes}; fix that row.")
    return torch.tensor([index[value] for value in values], dtype=torch.int64)


def _load_file(path: Path) -> TextSplits:
    suffix = path.suffix.lower()
    if suffix == ".txt":
        texts = [line.strip() for line in _read_text(path).split("\n")]
        texts = [text for text in texts if text]
        if not texts:
            raise DatasetError(f"{path} holds no sentences; a .txt corpus holds one sentence per line.")
        return TextSplits(path.stem, TextDataset(texts), None, [])
    if suffix in (".tsv", ".csv"):
        return _load_table(path, _csv_rows(path) if suffix == ".csv" else _tsv_rows(path))
    raise DatasetError(f"{path} is a {suffix or 'suffix-less'} file; text datasets are read from .txt (one "
                       "sentence per line), .tsv or .csv (pairs, scored pairs or triplets) files.")


def _load_table(path: Path, rows: list[Row]) -> TextSplits:
    """A .tsv / .csv file of pairs, scored pairs, triplets, or labelled sentences under a text/label header."""
    if not rows:
        raise DatasetError(f"{path} holds no rows; a pair file holds `text, positive` per line.")
    width = len(rows[0][1])
    if width not in (2, 3):
        raise DatasetError(f"{path} line {rows[0][0]} has {width} field(s); a pair file has 2 columns (text, "
                           "positive) or 3 (text, other, score, or anchor, positive, hard negative). A corpus of "
                           "single sentences is a .txt file with one sentence per line.")
    _check_width(path, rows, width, f"line {rows[0][0]}")
    first = [value.lower() for value in rows[0][1]]
    header = all(name in _HEADER_NAMES for name in first) or (
        width == 3 and not _is_number(rows[0][1][2]) and len(rows) > 1
        and all(_is_number(values[2]) for _, values in rows[1:]))
    data = rows[1:] if header else rows
    if not data:
        raise DatasetError(f"{path} holds a header row and no data.")
    columns = [list(column) for column in zip(*(values for _, values in data))]

    if header and width == 2 and first[1] == "label":
        _check_sentences(path, data, 1)
        # Numeric names in numeric order, so that labels 0..K-1 keep their values as class ids.
        classes = sorted(set(columns[1]), key=lambda name: (0, int(name), "") if name.isdigit() else (1, 0, name))
        return TextSplits(path.stem, TextDataset(columns[0], labels=_class_ids(columns[1], classes, path, data)),
                          None, classes)
    _check_sentences(path, data, 2)
    if width == 2:
        if all(_is_number(value) for value in columns[1]):
            raise DatasetError(f"{path}: the second column is a number on every row, so the file does not hold "
                               "sentence pairs. For labelled sentences, add the header row `text<sep>label`.")
        return TextSplits(path.stem, TextDataset(columns[0], columns[1]), None, [])

    numeric = [_is_number(value) for value in columns[2]]
    if all(numeric):
        scores = torch.tensor([float(value) for value in columns[2]], dtype=torch.float32)
        return TextSplits(path.stem, TextDataset(columns[0], columns[1], scores=scores), None, [])
    if 2 * sum(numeric) > len(numeric):
        # Mostly numbers: a scored-pair file with a bad score, which must not pass silently as triplets.
        line, values = next(row for row, is_number in zip(data, numeric) if not is_number)
        raise DatasetError(f"{path}: the third column is a score on {sum(numeric)} of {len(numeric)} rows, but "
                           f"line {line} holds {values[2]!r}; make it a number.")
    _check_sentences(path, data, 3)
    return TextSplits(path.stem, TextDataset(columns[0], columns[1], columns[2]), None, [])


# ------------------------------------------------------------------------------------ registered names


def _require(path: Path, dataset: str, hf_name: str) -> Path:
    if not path.is_file():
        raise DatasetError(
            f"{dataset} file {path} does not exist. Pass root= (data_root= in a config) the folder holding stsb/ "
            "and text/, e.g. the shared data folder ../shared/data, or set $CONTRASTKIT_DATA to it; when online, "
            f"'hf:{hf_name}' loads {dataset} from the Hugging Face hub instead (pip install datasets).")
    return path


def _read_stsb(path: Path) -> TextDataset:
    rows = _tsv_rows(path)
    for line, values in rows:
        # Some rows carry trailing source fields after the 7 columns; only fields 4, 5 and 6 matter.
        if len(values) < 7 or not _is_number(values[4]):
            raise DatasetError(f"{path} line {line} is not an STS-B row: expected 7 or more tab-separated fields "
                               f"(genre, file, year, id, score, sentence 1, sentence 2) with a numeric score, got "
                               f"{len(values)} field(s). Fix or remove that row.")
    pairs = [(line, values[5:7]) for line, values in rows]
    _check_sentences(path, pairs, 2)
    return TextDataset([values[5] for _, values in rows], [values[6] for _, values in rows],
                       scores=torch.tensor([float(values[4]) for _, values in rows], dtype=torch.float32))


@register_text_dataset("stsb")
def load_stsb(root: Path) -> TextSplits:
    """STS Benchmark: 5,749 train / 1,500 dev / 1,379 test sentence pairs scored 0 to 5."""
    train, dev, test = (_read_stsb(_require(root / "stsb" / f"sts-{split}.csv", "STS-B", "mteb/stsbenchmark-sts"))
                        for split in ("train", "dev", "test"))
    return TextSplits("stsb", train, test, [], {"dev": dev})


SST2_CLASSES = ["negative", "positive"]


def _read_sst2(path: Path) -> TextDataset:
    rows = _tsv_rows(path)
    if rows and [value.lower() for value in rows[0][1]] == ["sentence", "label"]:
        rows = rows[1:]
    _check_width(path, rows, 2, "an SST-2 row (sentence<TAB>label)")
    _check_sentences(path, rows, 1)
    labels = _class_ids([values[1] for _, values in rows], ["0", "1"], path, rows)
    return TextDataset([values[0] for _, values in rows], labels=labels)


@register_text_dataset("sst2")
def load_sst2(root: Path) -> TextSplits:
    """SST-2 sentiment: labelled sentences; test is GLUE's dev set, extra["dev"] the folder's dev.tsv."""
    train, dev, test = (_read_sst2(_require(root / "text" / "SST-2" / f"{split}.tsv", "SST-2", "stanfordnlp/sst2"))
                        for split in ("train", "dev", "test"))
    return TextSplits("sst2", train, test, list(SST2_CLASSES), {"dev": dev})


@register_text_dataset("agnews")
def load_agnews(root: Path) -> TextSplits:
    """AG News topics: train is a 10k subset of the official train set, test the official 7,600."""
    parts = []
    for split in ("dev", "test"):
        path = _require(root / "text" / "agnews" / f"{split}.tsv", "AG News", "fancyzhx/ag_news")
        rows = _tsv_rows(path)
        _check_width(path, rows, 2, "an AG News row (text<TAB>label name)")
        _check_sentences(path, rows, 1)
        parts.append((path, rows))
    classes = sorted({values[1] for _, values in parts[0][1]})
    train, test = (TextDataset([values[0] for _, values in rows],
                               labels=_class_ids([values[1] for _, values in rows], classes, path, rows))
                   for path, rows in parts)
    return TextSplits("agnews", train, test, classes)


def _load_joined(name: str, root: str | os.PathLike | None) -> TextSplits:
    parts = [part.strip() for part in name.split("+")]
    if not all(parts):
        raise DatasetError(f"{name!r} has an empty part; join dataset names or paths with '+', e.g. 'sst2+agnews'.")
    # Labels are dropped: the parts' class sets differ, and unsupervised training needs sentences only.
    texts = [text for part in parts for text in load_text_dataset(part, root=root).train.texts]
    return TextSplits(name, TextDataset(texts), None, [])


# ---------------------------------------------------------------------------------------- Hugging Face

# Text columns of common Hugging Face layouts, tried in order (triplets before the pairs they contain).
_HF_LAYOUTS: tuple[tuple[str, ...], ...] = (
    ("anchor", "positive", "negative"),
    ("sentence1", "sentence2"),
    ("premise", "hypothesis"),
    ("anchor", "positive"),
    ("question1", "question2"),
    ("sentence",),
    ("text",),
)


def _load_hf(spec: str) -> TextSplits:
    name, _, config = spec.partition(":")
    if not name:
        raise DatasetError("hf: needs a Hugging Face dataset id, e.g. 'hf:mteb/stsbenchmark-sts' or "
                           "'hf:nyu-mll/glue:stsb' (id:config).")
    try:
        import datasets
    except ModuleNotFoundError as error:
        raise DatasetError(f"hf:{spec} needs the Hugging Face `datasets` package: run `pip install datasets` "
                           "(loading also needs the internet), or pass a local .txt, .tsv or .csv file.") from error
    try:
        dataset_dict = datasets.load_dataset(name, config or None)
    except Exception as error:  # the hub client raises many types: ConnectionError, DatasetNotFoundError, ValueError
        raise DatasetError(f"could not load the Hugging Face dataset hf:{spec} ({type(error).__name__}: {error}). "
                           "hf: datasets are downloaded from the hub, so this needs the internet or a cached copy; "
                           f"check the id at https://huggingface.co/datasets/{name}, or pass a local file.") from error
    return text_splits_from_hf(f"hf:{spec}", dataset_dict)


def _hf_texts(name: str, split: str, dataset: Any, column: str) -> list[str]:
    values = list(dataset[column])
    bad = next((i for i, value in enumerate(values) if not isinstance(value, str)), None)
    if bad is not None:
        raise DatasetError(f"{name} split {split!r}, row {bad}: column {column!r} holds {values[bad]!r}, not text.")
    return [value.strip() for value in values]


def text_splits_from_hf(name: str, dataset_dict: Mapping[str, Any]) -> TextSplits:
    """Map a Hugging Face ``DatasetDict`` (split name -> ``datasets.Dataset``) to :class:`TextSplits`.

    Text columns follow the first layout of ``_HF_LAYOUTS`` that the train split has. A ``score``
    column, or a ``label`` column of floats (GLUE's STS-B), gives scores; a ``label`` column of ints or
    strings gives class ids, named by its ``ClassLabel`` names, else by the sorted strings, else by the
    ids. A split whose labels or scores are all -1 (hidden test labels, as in GLUE) is left unannotated;
    single rows labelled -1 (no gold label, as in SNLI) keep the -1. The test split is the first of
    test, validation and dev annotated like train (else the first present); other splits go to ``extra``.
    """
    if "train" not in dataset_dict:
        raise DatasetError(f"{name} has no train split (it has {sorted(dataset_dict)}).")
    train_columns = dataset_dict["train"].column_names
    layout = next((layout for layout in _HF_LAYOUTS if all(column in train_columns for column in layout)), None)
    if layout is None:
        raise DatasetError(f"{name} has the columns {train_columns}, none of the layouts contrastkit maps: "
                           f"{'; '.join('/'.join(layout) for layout in _HF_LAYOUTS)}, with an optional score or "
                           "label column. Rename its columns (Dataset.rename_column) or save it as a .tsv file.")
    label_feature = getattr(dataset_dict["train"], "features", {}).get("label")
    classes: list[str] = list(getattr(label_feature, "names", None) or [])
    mapped: dict[str, TextDataset] = {}
    for split in ["train"] + [split for split in dataset_dict if split != "train"]:
        dataset = dataset_dict[split]
        missing = [column for column in layout if column not in dataset.column_names]
        if missing:
            raise DatasetError(f"{name} split {split!r} lacks the column(s) {missing} that its train split has.")
        texts = [_hf_texts(name, split, dataset, column) for column in layout]
        labels = scores = None
        annotation = next((column for column in ("score", "label") if column in dataset.column_names), None)
        values = list(dataset[annotation]) if annotation else []
        if values and all(value == -1 for value in values):
            pass  # hidden labels: an unannotated split
        elif annotation == "score" or any(isinstance(value, float) for value in values):
            scores = torch.tensor(values, dtype=torch.float32)
        elif values and all(isinstance(value, str) for value in values):
            if split == "train":
                classes = sorted(set(values))
            unknown = sorted(set(values) - set(classes))
            if unknown:
                raise DatasetError(f"{name} split {split!r} has the label(s) {unknown[:5]}, which its train split "
                                   f"lacks; known labels: {classes}.")
            index = {label: i for i, label in enumerate(classes)}
            labels = torch.tensor([index[value] for value in values], dtype=torch.int64)
        elif values:
            labels = torch.tensor(values, dtype=torch.int64)
        mapped[split] = TextDataset(texts[0], *texts[1:], labels=labels, scores=scores)  # type: ignore[misc]
    if not classes:
        top = max((int(dataset.labels.max()) for dataset in mapped.values()
                   if dataset.labels is not None and len(dataset)), default=-1)
        classes = [str(i) for i in range(top + 1)]

    train = mapped.pop("train")

    def annotated_like_train(dataset: TextDataset) -> bool:
        return (dataset.labels is None) == (train.labels is None) and (dataset.scores is None) == (train.scores is None)

    candidates = [split for split in ("test", "validation", "dev") if split in mapped]
    test_split = next((split for split in candidates if annotated_like_train(mapped[split])),
                      candidates[0] if candidates else None)
    test = mapped.pop(test_split) if test_split else None
    return TextSplits(name, train, test, classes, mapped)
