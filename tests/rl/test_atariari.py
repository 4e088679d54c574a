"""AtariARI's RAM annotations, episode collection and probe protocol (contrastkit.data.atariari,
contrastkit.evaluate.state_probe)."""

import pytest
import torch

from contrastkit.data.atariari import (ATARIARI_ENV_IDS, RAM_ANNOTATIONS, annotated_games, collect_atariari_episodes,
                                       ram_labels, state_variables)
from contrastkit.errors import ConfigError, InputError
from contrastkit.evaluate.state_probe import (CATEGORIES, category_mean, probe_f1, state_probe_scores,
                                              train_state_probes, variable_categories, weighted_f1)

try:
    import ale_py
    import gymnasium
except ImportError:  # the table and probe tests below need neither
    ale_py = gymnasium = None

needs_ale = pytest.mark.skipif(ale_py is None or gymnasium is None,
                               reason="AtariARI episodes need gymnasium and ale-py (pip install gymnasium ale-py)")

PAPER_GAMES = ("asteroids", "berzerk", "bowling", "boxing", "breakout", "demonattack", "freeway", "frostbite", "hero",
               "montezumarevenge", "mspacman", "pitfall", "pong", "privateeye", "qbert", "riverraid", "seaquest",
               "spaceinvaders", "tennis", "venture", "videopinball", "yarsrevenge")


def test_annotation_table_covers_the_paper_games():
    assert set(PAPER_GAMES) <= set(annotated_games())
    assert set(ATARIARI_ENV_IDS) == set(RAM_ANNOTATIONS)
    for game, variables in RAM_ANNOTATIONS.items():
        assert variables, game
        assert all(0 <= address < 128 for address in variables.values()), game
    # Multi-byte variables are split one per byte, as AtariARI names them.
    assert [f"block_bit_map_{i}" in RAM_ANNOTATIONS["breakout"] for i in (0, 29)] == [True, True]
    assert "block_bit_map_30" not in RAM_ANNOTATIONS["breakout"]
    assert RAM_ANNOTATIONS["qbert"]["tile_color_0"] == 21 and RAM_ANNOTATIONS["qbert"]["tile_color_20"] == 42
    assert RAM_ANNOTATIONS["asteroids"]["enemy_asteroids_x_14"] == 37
    assert state_variables("Pong") == RAM_ANNOTATIONS["pong"] and state_variables("pong") is not RAM_ANNOTATIONS["pong"]


def test_ram_labels_read_the_annotated_bytes():
    ram = torch.zeros(3, 128, dtype=torch.uint8)
    ram[:, 51] = torch.tensor([10, 200, 255], dtype=torch.uint8)  # pong player_y
    ram[:, 49] = torch.tensor([1, 2, 3], dtype=torch.uint8)  # pong ball_x
    labels = ram_labels("pong", ram)
    assert list(labels) == list(RAM_ANNOTATIONS["pong"])
    assert labels["player_y"].tolist() == [10, 200, 255] and labels["player_y"].dtype == torch.int64
    assert labels["ball_x"].tolist() == [1, 2, 3] and labels["enemy_y"].tolist() == [0, 0, 0]
    # Every name form of a game gives the same labels; a single RAM row is one step.
    for name in ("Pong", "ALE/Pong-v5", "PongNoFrameskip-v4"):
        assert torch.equal(ram_labels(name, ram)["player_y"], labels["player_y"])
    assert ram_labels("pong", ram[1])["player_y"].tolist() == [200]
    # A game with multi-byte variables: every byte its own label.
    ram = torch.arange(128, dtype=torch.uint8)[None].repeat(2, 1)
    breakout = ram_labels("breakout", ram)
    assert [breakout[f"block_bit_map_{i}"][0].item() for i in range(30)] == list(range(30))
    assert breakout["ball_x"][0].item() == 99


def test_unknown_game_and_bad_ram_errors():
    with pytest.raises(ConfigError, match="annotated games: asteroids, .*pong"):
        ram_labels("doom", torch.zeros(1, 128, dtype=torch.uint8))
    with pytest.raises(InputError, match="128 bytes"):
        ram_labels("pong", torch.zeros(2, 64, dtype=torch.uint8))
    with pytest.raises(InputError, match="uint8"):
        ram_labels("pong", torch.zeros(2, 128, dtype=torch.int64))
    with pytest.raises(InputError, match=r"\(steps, 128\)"):
        ram_labels("pong", torch.zeros(2, 2, 128, dtype=torch.uint8))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weighted_f1_matches_sklearn(seed):
    f1_score = pytest.importorskip("sklearn.metrics").f1_score
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 12, (400,), generator=g)
    # Right 60% of the time, else a class in 0..15: some predicted classes never occur in the labels.
    noise = torch.randint(0, 16, (400,), generator=g)
    predictions = torch.where(torch.rand(400, generator=g) < 0.6, labels, noise)
    expected = f1_score(labels.numpy(), predictions.numpy(), average="weighted")
    assert weighted_f1(predictions, labels) == pytest.approx(expected, abs=1e-12)
    assert weighted_f1(labels, labels) == 1.0


def test_weighted_f1_errors():
    with pytest.raises(InputError, match="same length"):
        weighted_f1(torch.zeros(3, dtype=torch.long), torch.zeros(4, dtype=torch.long))
    with pytest.raises(InputError, match="integer class ids"):
        weighted_f1(torch.zeros(3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(InputError, match="no labels"):
        weighted_f1(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))


def _linear_data(n, dim=16, seed=0):
    """Features whose first coordinate sets a 4-valued RAM-like label (values 3, 70, 140, 250) linearly."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g)
    bucket = torch.bucketize(x[:, 0].contiguous(), torch.tensor([-0.7, 0.0, 0.7]))
    return x * torch.tensor([4.0] + [1.0] * (dim - 1)), torch.tensor([3, 70, 140, 250])[bucket]


def test_probe_decodes_a_linearly_decodable_variable():
    x, y = _linear_data(3000)
    noise = torch.randint(0, 256, (3000,), generator=torch.Generator().manual_seed(5))
    labels = {"player_x": y, "noise_count": noise}
    split = lambda a, b: (x[a:b], {k: v[a:b] for k, v in labels.items()})  # noqa: E731
    scores = state_probe_scores(*split(0, 2000), *split(2000, 2500), *split(2500, 3000), epochs=40, patience=5,
                                lr=3e-3)
    assert scores["f1"]["player_x"] > 0.9
    assert scores["f1"]["noise_count"] < 0.1
    f1 = scores["f1"]
    assert scores["category_f1"] == {"agent_localization": f1["player_x"], "misc": f1["noise_count"]}
    assert scores["across_categories_f1"] == pytest.approx((scores["f1"]["player_x"] + scores["f1"]["noise_count"]) / 2)
    # Noise stops early (no val improvement for `patience` epochs), well before the 40.
    assert scores["epochs"]["noise_count"] < 40


def test_probes_are_seeded_and_train_independently():
    x, y = _linear_data(600, seed=1)
    tr, va = (x[:400], {"a_x": y[:400]}), (x[400:], {"a_x": y[400:]})
    one = train_state_probes(*tr, *va, epochs=3, seed=4)
    two = train_state_probes(*tr, *va, epochs=3, seed=4)
    assert torch.equal(one.weight, two.weight)
    both = train_state_probes(x[:400], {"a_x": y[:400], "b_y": y[:400].flip(0)}, x[400:],
                              {"a_x": y[400:], "b_y": y[400:]}, epochs=3, seed=4)
    assert both.names == ["a_x", "b_y"] and both.weight.shape == (2, 16, 256) and both.predict(x[:5]).shape == (2, 5)
    f1 = probe_f1(one, x[400:], {"a_x": y[400:]})["a_x"]
    assert 0.0 <= f1 <= 1.0
    # Episode-wise sampling as AtariARI draws frames runs too.
    episodic = train_state_probes(*tr, *va, epochs=2, train_episode=torch.arange(400) // 50,
                                  val_episode=torch.arange(200) // 40)
    assert episodic.epochs["a_x"] == 2
    with pytest.raises(InputError, match="val_episode"):
        train_state_probes(*tr, *va, val_episode=torch.arange(10))


def test_probe_training_is_adam_on_one_linear_layer_per_variable():
    # One epoch, in the batch order the seed gives, equals torch.optim.Adam(eps=1e-5) on an nn.Linear-like probe.
    x, y = _linear_data(640, dim=8, seed=2)
    probes = train_state_probes(x[:512], {"a_x": y[:512]}, x[512:], {"a_x": y[512:]}, lr=1e-3, epochs=1, seed=3)
    g = torch.Generator().manual_seed(3)
    bound = 8 ** -0.5
    weight = ((torch.rand(1, 8, 256, generator=g) * 2 - 1) * bound)[0].requires_grad_()
    bias = ((torch.rand(1, 256, generator=g) * 2 - 1) * bound)[0].requires_grad_()
    optimiser = torch.optim.Adam([weight, bias], lr=1e-3, eps=1e-5)
    order = torch.randperm(512, generator=g)
    for start in range(0, 512, 64):
        index = order[start:start + 64]
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(x[index] @ weight + bias, y[index]).backward()
        optimiser.step()
    assert torch.allclose(probes.weight[0], weight.detach(), atol=1e-6)
    assert torch.allclose(probes.bias[0], bias.detach(), atol=1e-6)


def test_probe_input_errors():
    x, y = _linear_data(300)
    good = {"player_x": y[:200]}
    with pytest.raises(InputError, match="variables"):
        train_state_probes(x[:200], good, x[200:], {"other": y[200:]})
    with pytest.raises(InputError, match="outside"):
        train_state_probes(x[:200], {"player_x": y[:200] + 300}, x[200:], {"player_x": y[200:]})
    with pytest.raises(InputError, match="fewer than one batch"):
        train_state_probes(x[:10], {"player_x": y[:10]}, x[200:], {"player_x": y[200:]})
    with pytest.raises(InputError, match="rows"):
        train_state_probes(x[:200], {"player_x": y[:150]}, x[200:], {"player_x": y[200:]})
    with pytest.raises(ConfigError, match="unknown option"):
        state_probe_scores(x[:200], good, x[200:250], {"player_x": y[200:250]}, x[250:], {"player_x": y[250:]},
                           learning_rate=1.0)


def test_categories_follow_atariari_names():
    assert variable_categories("ball_x") == ("small_object_localization",)
    assert variable_categories("player_missile_y1") == ("small_object_localization",)
    assert variable_categories("player_y") == ("agent_localization",)
    assert variable_categories("enemy_asteroids_x_3") == ("other_localization",)
    assert variable_categories("player_score") == ("score_clock_lives_display",)
    assert variable_categories("num_lives_direction") == ("score_clock_lives_display", "misc")
    assert variable_categories("block_bit_map_4") == ("misc",)
    assert variable_categories("angle_of_tank") == ()
    assert len(CATEGORIES) == 5
    assert category_mean({"ball_x": 0.2, "ball_y": 0.4, "player_y": 0.9, "angle_of_tank": 0.0}) == pytest.approx(0.6)
    with pytest.raises(InputError, match="category"):
        category_mean({"angle_of_tank": 0.5})


@needs_ale
def test_collection_is_seeded_and_splits_share_no_frame():
    a = collect_atariari_episodes("breakout", 1200, seed=3, min_episode_length=8)
    b = collect_atariari_episodes("breakout", 1200, seed=3, min_episode_length=8)
    assert torch.equal(a.frames, b.frames) and torch.equal(a.test, b.test) and torch.equal(a.train, b.train)
    assert all(torch.equal(a.labels[k], b.labels[k]) for k in a.labels)
    assert a.frames.shape[1:] == (1, 210, 160) and a.frames.dtype == torch.uint8
    assert a.steps == 1200 and len(a.frames) <= 1200
    assert not torch.equal(collect_atariari_episodes("breakout", 1200, seed=4, min_episode_length=8).frames[:50],
                           a.frames[:50])
    # Whole episodes in train; no frame in two splits, byte for byte.
    train_episodes = set(a.episode[a.train].tolist())
    assert not train_episodes & set(a.episode[a.val].tolist()) and not train_episodes & set(a.episode[a.test].tolist())
    as_bytes = [{a.frames[int(i)].numpy().tobytes() for i in index} for index in (a.train, a.val, a.test)]
    assert not (as_bytes[0] & as_bytes[1]) and not (as_bytes[0] & as_bytes[2]) and not (as_bytes[1] & as_bytes[2])
    # Kept variables have labels for every frame in 0..255; dropped ones are gone.
    assert set(a.labels) | set(a.dropped) == set(RAM_ANNOTATIONS["breakout"]) and "ball_x" in a.labels
    assert all(v.shape == (len(a.frames),) and 0 <= int(v.min()) and int(v.max()) <= 255 for v in a.labels.values())
    frames, labels = a.split("val")
    assert len(frames) == len(a.val) and set(labels) == set(a.labels)


@needs_ale
def test_collection_errors():
    with pytest.raises(ConfigError, match="annotated games"):
        collect_atariari_episodes("doom", 100, seed=0)
    with pytest.raises(ConfigError, match="collect more steps"):
        collect_atariari_episodes("pong", 200, seed=0)
    with pytest.raises(ConfigError, match="steps"):
        collect_atariari_episodes("pong", 0, seed=0)
