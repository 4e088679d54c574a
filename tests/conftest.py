"""Fixtures shared across the test folders."""

import pytest

from contrastkit import cli


@pytest.fixture(scope="session")
def run_cli():
    """Run the ``contrastkit`` command in-process and return its exit code (0, or SystemExit's)."""

    def run(*argv):
        try:
            cli.main(list(argv))
        except SystemExit as exit_:
            return exit_.code
        return 0

    return run
