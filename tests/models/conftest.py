"""Fixtures shared by the models tests: one tiny random Llama checkpoint for the whole package."""

import pytest

from genppl import models
from tests.checkpoints import save_llama


@pytest.fixture(scope="package")
def llama_checkpoint(tmp_path_factory):
    """(directory, torch model) of a 2-layer random Llama saved with its tokenizer."""
    path = tmp_path_factory.mktemp("llama")
    torch_model = save_llama(path)
    return path, torch_model


@pytest.fixture(scope="package")
def llama_lm(llama_checkpoint):
    return models.load(llama_checkpoint[0])
