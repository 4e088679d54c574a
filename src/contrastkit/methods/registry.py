"""The registry of methods selectable by name (``contrastkit train --method NAME``)."""

from __future__ import annotations

from torch import nn

from contrastkit.registry import Registry

METHODS: Registry[type[nn.Module]] = Registry("method")
register_method = METHODS.register


def list_methods() -> list[str]:
    return METHODS.names()
