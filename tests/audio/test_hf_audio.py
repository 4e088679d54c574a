"""Hugging Face audio models as audio encoders (``hf:<folder>``), on a tiny randomly initialised
wav2vec 2.0 saved to a folder (no download)."""

import json

import numpy as np
import pytest
import torch

from contrastkit import config as config_module
from contrastkit import runs
from contrastkit.config import Config
from contrastkit.errors import ConfigError
from contrastkit.models.audio import create_audio_backbone

transformers = pytest.importorskip("transformers", reason="hf: audio encoders need transformers")


@pytest.fixture(scope="module")
def tiny_wav2vec2(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_wav2vec2")
    config = transformers.Wav2Vec2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                         intermediate_size=32, conv_dim=(8, 8), conv_stride=(5, 4),
                                         conv_kernel=(10, 8), num_conv_pos_embeddings=8,
                                         num_conv_pos_embedding_groups=2, vocab_size=4)
    torch.manual_seed(0)
    transformers.Wav2Vec2Model(config).save_pretrained(folder)
    transformers.Wav2Vec2FeatureExtractor(sampling_rate=8000).save_pretrained(folder)
    return folder


def test_embeds_clips_by_the_mean_over_their_frames(tiny_wav2vec2):
    encoder = create_audio_backbone(f"hf:{tiny_wav2vec2}", 8000).eval()
    clips = torch.randn(3, 1, 4000)
    with torch.no_grad():
        features = encoder(clips)
    assert features.shape == (3, encoder.feature_dim) == (3, 16) and torch.isfinite(features).all()
    # A clip's normalisation is over its own samples: a gain changes nothing.
    with torch.no_grad():
        assert torch.allclose(encoder(5 * clips), features, atol=1e-4)
    # A zero-padded clip: normalised over its 2,000 samples (NumPy, float64) and averaged over the
    # frames those cover: conv (10, stride 5) gives 399 frames, conv (8, stride 4) then 98.
    padded = clips.clone()
    padded[0, 0, 2000:] = 0
    samples = clips[0, 0, :2000].double().numpy()
    normalised = torch.zeros(4000)
    normalised[:2000] = torch.from_numpy((samples - samples.mean()) / np.sqrt(samples.var() + 1e-7)).float()
    with torch.no_grad():
        hidden = encoder.model(normalised[None]).last_hidden_state[0]
        assert torch.allclose(encoder(padded)[0], hidden[:98].mean(dim=0), atol=1e-5)

def test_refuses_a_rate_the_model_was_not_trained_at_and_a_missing_model(tiny_wav2vec2, tmp_path):
    with pytest.raises(ConfigError, match="audio.sample_rate=8000"):
        create_audio_backbone(f"hf:{tiny_wav2vec2}", 16000)
    with pytest.raises(ConfigError, match="cannot load the Hugging Face audio model"):
        create_audio_backbone(f"hf:{tmp_path / 'absent'}", 8000)


def test_trains_through_runs_as_an_audio_backbone(tiny_wav2vec2, tmp_path, corpus):
    corpus(tmp_path / "clips", per_class=6)
    config = config_module.update(Config(dataset=f"audio:{tmp_path / 'clips'}", backbone=f"hf:{tiny_wav2vec2}",
                                         epochs=1, batch_size=4, device="cpu", out=str(tmp_path / "run"),
                                         progress=False, plot=False, knn_k=3), {"audio.seconds": 0.5})
    summary = json.loads((runs.train(config) / "summary.json").read_text())
    assert 0 <= summary["knn_top1"] <= 1
    assert runs.Run.load(tmp_path / "run").method.backbone.feature_dim == 16
