import pytest
import torch

from contrastkit.errors import ConfigError
from contrastkit.models import create_backbone, create_head, list_backbones


@pytest.mark.parametrize("name, channels, size, cifar_stem, dim", [
    ("small_cnn", 1, 28, False, 128),
    ("resnet18", 3, 32, True, 512),
    ("resnet18", 1, 32, False, 512),
    ("resnet50", 3, 32, True, 2048),
])
def test_backbones_map_images_to_feature_vectors(name, channels, size, cifar_stem, dim):
    net = create_backbone(name, in_channels=channels, cifar_stem=cifar_stem)
    assert net.feature_dim == dim
    assert net(torch.randn(2, channels, size, size)).shape == (2, dim)


def test_cifar_stem_keeps_full_resolution():
    stem = create_backbone("resnet18", cifar_stem=True).net
    assert stem.conv1.kernel_size == (3, 3) and stem.conv1.stride == (1, 1)
    assert isinstance(stem.maxpool, torch.nn.Identity)


def test_unknown_backbone_suggests_the_close_match():
    with pytest.raises(ConfigError, match="did you mean 'resnet18'"):
        create_backbone("resnt18")
    with pytest.raises(ConfigError, match="cifar_stem applies to the torchvision ResNets only"):
        create_backbone("small_cnn", cifar_stem=True)
    assert "timm:<any timm model>" in list_backbones()


@pytest.mark.parametrize("kind, layers", [("mlp2", 2), ("mlp3", 3)])
def test_mlp_heads(kind, layers):
    head = create_head(kind, 16, 32, 8)
    assert head(torch.randn(4, 16)).shape == (4, 8)
    assert sum(isinstance(m, torch.nn.Linear) for m in head.modules()) == layers
    assert isinstance(create_head("identity", 16), torch.nn.Identity)
    with pytest.raises(ConfigError, match="unknown projection head"):
        create_head("mlp9", 16)
