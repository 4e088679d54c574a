"""Docstring examples run as tests (``pytest --doctest-modules src``) with torch at hand."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _doctest_namespace(doctest_namespace):
    doctest_namespace["torch"] = torch
