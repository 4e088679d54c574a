"""Interaction tables and their per-user splits: the invariants RecBole's protocols keep (no held-out
interaction in training, every interaction in one split, seeded), reading files, and ML-100K."""

import importlib.util

import numpy as np
import pytest
import torch

from contrastkit.data.interactions import (Interactions, NegativeSampler, load_interactions, read_interactions,
                                           split_per_user)
from contrastkit.errors import ConfigError, DatasetError

needs_recbole = pytest.mark.skipif(importlib.util.find_spec("recbole") is None,
                                   reason="ML-100K is read from the recbole package: pip install --no-deps recbole")


def _pairs(part: Interactions) -> set[tuple[int, int]]:
    return set(zip(part.users.tolist(), part.items.tolist()))


@pytest.mark.parametrize("split", ["random", "time"])
def test_a_split_partitions_the_interactions_and_holds_no_test_pair_in_training(tmp_path, ratings, split):
    path = ratings(tmp_path / "ratings.csv")
    splits = load_interactions(str(path), split=split, seed=3)
    train, valid, test = (_pairs(part) for part in (splits.train, splits.valid, splits.test))
    table = read_interactions(path)
    everything = set(zip(table["users"].tolist(), table["items"].tolist()))
    assert train | valid | test == everything
    assert not (train & test) and not (train & valid) and not (valid & test)
    assert len(splits.train) + len(splits.valid) + len(splits.test) == len(everything)
    # Every user keeps interactions to train on and (with 5 or more) holds some out.
    per_user = np.bincount(splits.train.users.numpy(), minlength=splits.num_users)
    assert (per_user >= 3).all() and set(splits.test.users.tolist()) == set(range(splits.num_users))


def test_the_random_split_is_seeded_8_1_1_per_user(tmp_path, ratings):
    path = ratings(tmp_path / "ratings.csv")
    first, again, other = (load_interactions(str(path), seed=seed) for seed in (0, 0, 1))
    assert torch.equal(first.test.items, again.test.items) and torch.equal(first.valid.users, again.valid.users)
    assert _pairs(first.test) != _pairs(other.test)
    counts = np.bincount(read_interactions(path)["users"])
    held = np.bincount(first.test.users.numpy(), minlength=len(counts))
    # floor(0.1 n), raised to one while three or more stay in training.
    assert np.array_equal(held, np.maximum(np.floor(counts * 0.1), 1))
    assert split_per_user(np.zeros(20, dtype=np.int64), np.arange(20.0), "random").tolist() == [0] * 16 + [1, 1, 2, 2]


def test_leave_one_out_by_time_holds_out_each_users_latest(tmp_path, ratings):
    path = ratings(tmp_path / "ratings.csv")
    splits = load_interactions(str(path), split="time")
    for user in range(splits.num_users):
        train_times = splits.train.timestamps[splits.train.users == user]
        valid_time = splits.valid.timestamps[splits.valid.users == user]
        test_time = splits.test.timestamps[splits.test.users == user]
        assert len(test_time) == len(valid_time) == 1
        assert train_times.max() <= valid_time[0] <= test_time[0]


def test_reading_files_headers_thresholds_and_bad_input(tmp_path, ratings):
    no_header = ratings(tmp_path / "plain.csv", header="")
    with_header = ratings(tmp_path / "named.csv")
    assert read_interactions(no_header)["users"].tolist() == read_interactions(with_header)["users"].tolist()
    kept = read_interactions(with_header, threshold=4)
    assert len(kept["users"]) < len(read_interactions(with_header)["users"])
    tsv = tmp_path / "r.tsv"
    tsv.write_text("user_id:token\titem_id:token\n10\t2\n9\t2\n10\t1\n10\t2\n")
    table = read_interactions(tsv)
    # Ids in numeric order; the pair rated twice is one interaction.
    assert table["user_ids"] == ["9", "10"] and table["users"].tolist() == [1, 0, 1]
    with pytest.raises(ConfigError, match="needs a rating column"):
        read_interactions(tsv, threshold=4)
    with pytest.raises(ConfigError, match="no timestamp column; use split=random"):
        load_interactions(str(tsv), split="time")
    with pytest.raises(DatasetError, match="does not exist"):
        read_interactions(tmp_path / "missing.csv")


def test_negatives_are_never_the_users_training_items():
    users = torch.arange(50).repeat_interleave(8)
    items = torch.randint(0, 20, (400,), generator=torch.Generator().manual_seed(0))
    keys = torch.unique(users * 20 + items)
    train = Interactions(keys // 20, keys % 20)
    sampler = NegativeSampler(train, 20, negatives=4)
    generator = torch.Generator().manual_seed(1)
    batch_users, _, negatives = sampler(train.pairs(), generator)
    seen = set(zip(train.users.tolist(), train.items.tolist()))
    drawn = [(user, item) for user, row in zip(batch_users.tolist(), negatives.tolist()) for item in row]
    assert not any(pair in seen for pair in drawn)
    again = sampler(train.pairs(), torch.Generator().manual_seed(1))[2]
    assert torch.equal(negatives, again)


@needs_recbole
def test_ml_100k_is_read_from_the_recbole_package():
    splits = load_interactions("ml-100k", seed=0)
    assert (splits.num_users, splits.num_items) == (943, 1682)
    assert len(splits.train) + len(splits.valid) + len(splits.test) == 100_000
    assert splits.item_titles[0] == "Toy Story" and splits.user_ids[:2] == ["1", "2"]
    assert len(load_interactions("ml-100k", threshold=4).train) < len(splits.train)
    # Age, gender and occupation; genres and year. Zip codes and titles, near-unique, are left out.
    user_columns = {token.split("=")[0] for token in splits.user_features.vocabulary}
    item_columns = {token.split("=")[0] for token in splits.item_features.vocabulary}
    assert user_columns == {"age", "gender", "occupation"} and item_columns == {"release_year", "class"}
    first_user = splits.user_features.tokens[:splits.user_features.offsets[1]]
    assert [splits.user_features.vocabulary[token] for token in first_user] == ["age=24", "gender=M",
                                                                               "occupation=technician"]
