"""``python -m contrastkit`` (and ``torchrun ... -m contrastkit``): the ``contrastkit`` command."""

from contrastkit.cli import main

main()
