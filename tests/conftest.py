import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """The tiny SD 1.5 / SDXL models (folders, single files, config dirs), written once per test run."""
    from pictale.engine.tiny import write_tiny_models

    return write_tiny_models(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="session")
def tiny_clip(tiny_models):
    """The tiny CLIP scorer folder (model + processor), loaded by the same code as a real CLIP."""
    return tiny_models["clip"]
