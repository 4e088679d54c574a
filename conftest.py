"""Docstring examples run as tests (``pytest --doctest-modules src``) with torch at hand."""

import importlib.util

import pytest
import torch

# Docstring examples that read data or compute through an optional package: skipped, with the
# reason, where that package is absent (as the tests that need it are).
EXAMPLES_NEEDING = {
    "contrastkit.data.series.load_series": "aeon",
    "contrastkit.evaluate.series.dtw_distances": "aeon",
    "contrastkit.evaluate.series.one_nn_dtw": "aeon",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        package = EXAMPLES_NEEDING.get(item.name)
        if package is not None and importlib.util.find_spec(package) is None:
            item.add_marker(pytest.mark.skip(reason=f"the example needs {package} (pip install {package})"))


@pytest.fixture(autouse=True)
def _doctest_namespace(doctest_namespace):
    doctest_namespace["torch"] = torch
