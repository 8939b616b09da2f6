"""One tiny random checkpoint per architecture, shared by the decoder and checkpoint tests."""

import pytest

from genppl.models.architectures import load_checkpoint
from tests.models.architectures.common import ARCHS, jitted, make_torch_model


@pytest.fixture(scope="package", params=list(ARCHS))
def arch(request, tmp_path_factory):
    name = request.param
    path = tmp_path_factory.mktemp(name)
    model = make_torch_model(name)
    model.save_pretrained(str(path))
    decoder, config = load_checkpoint(path)
    return dict(name=name, path=path, torch=model, decoder=decoder, config=config, forward=jitted(decoder))
