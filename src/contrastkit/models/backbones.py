"""Backbones: a registry of encoders that map a batch to feature vectors.

Every backbone returned by :func:`create_backbone` maps a batch to (B, feature_dim) and carries
``feature_dim``. Image names, for (B, C, H, W) batches: ``small_cnn`` (MNIST-size images, fast on a
CPU), torchvision's ``resnet18/34/50`` (``cifar_stem=True`` swaps the 7x7 stride-2 stem and
max-pool for a 3x3 stride-1 conv, as used for 32x32 images), and any timm model as
``timm:<name>``. Text: any Hugging Face transformer as ``hf:<name or path>``
(:class:`contrastkit.models.text.TextEncoder`, for tokenized batches).
"""

from __future__ import annotations

from typing import Callable

from torch import Tensor, nn

from contrastkit.errors import ConfigError
from contrastkit.registry import Registry

BACKBONES: Registry[Callable[..., nn.Module]] = Registry("backbone")
register_backbone = BACKBONES.register


def _conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]


class SmallCNN(nn.Module):
    """Three conv-BN-ReLU stages with max-pooling between them and global average pooling.

    Small enough to pretrain on MNIST in minutes on two CPU cores.

    Example:
        >>> SmallCNN(in_channels=1)(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 128])
    """

    def __init__(self, in_channels: int = 1, widths: tuple[int, int, int] = (16, 32, 128)) -> None:
        super().__init__()
        first, second, third = widths
        self.features = nn.Sequential(
            *_conv_bn_relu(in_channels, first), nn.MaxPool2d(2),
            *_conv_bn_relu(first, second), nn.MaxPool2d(2),
            *_conv_bn_relu(second, third),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.feature_dim = third

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)


@register_backbone("small_cnn")
def small_cnn(in_channels: int = 1, **kwargs) -> nn.Module:
    return SmallCNN(in_channels=in_channels, **kwargs)


class _TorchvisionResNet(nn.Module):
    """A torchvision ResNet without its classifier, optionally with the CIFAR stem."""

    def __init__(self, name: str, in_channels: int, cifar_stem: bool, **kwargs) -> None:
        super().__init__()
        import torchvision

        net = getattr(torchvision.models, name)(weights=None, **kwargs)
        if cifar_stem:
            net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        elif in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.feature_dim = net.fc.in_features
        net.fc = nn.Identity()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def _register_resnet(name: str) -> None:
    @register_backbone(name)
    def build(in_channels: int = 3, cifar_stem: bool = False, **kwargs) -> nn.Module:
        return _TorchvisionResNet(name, in_channels, cifar_stem, **kwargs)


for _name in ("resnet18", "resnet34", "resnet50"):
    _register_resnet(_name)


class _TimmBackbone(nn.Module):
    def __init__(self, name: str, in_channels: int, **kwargs) -> None:
        super().__init__()
        try:
            import timm
        except ImportError as error:
            raise ConfigError(f"backbone 'timm:{name}' needs timm: pip install timm") from error
        self.net = timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_channels, **kwargs)
        self.feature_dim = self.net.num_features

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def create_backbone(name: str, *, in_channels: int = 3, cifar_stem: bool = False, **kwargs) -> nn.Module:
    """Build a backbone by name; the result has a ``feature_dim`` attribute.

    Example:
        >>> net = create_backbone("resnet18", cifar_stem=True)
        >>> net.feature_dim
        512
    """
    if cifar_stem and not name.startswith("resnet"):
        raise ConfigError(f"cifar_stem applies to the torchvision ResNets only, not to {name!r}; "
                          "drop it (a timm model is configured through its own arguments).")
    if name.startswith("hf:"):
        from contrastkit.models.text import TextEncoder

        return TextEncoder(name[len("hf:"):], **kwargs)
    if name.startswith("timm:"):
        return _TimmBackbone(name[len("timm:"):], in_channels, **kwargs)
    builder = BACKBONES.get(name)
    if cifar_stem:
        kwargs["cifar_stem"] = True
    return builder(in_channels=in_channels, **kwargs)


def list_backbones() -> list[str]:
    """Registered backbone names; any timm model is also available as ``timm:<name>``, any Hugging
    Face transformer as ``hf:<name>``."""
    return BACKBONES.names() + ["timm:<any timm model>", "hf:<any Hugging Face model> (text)"]
