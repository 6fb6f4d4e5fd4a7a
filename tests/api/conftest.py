"""An app on the tiny SD 1.5 model, shared by the API tests (loading is cheap, but imports are not)."""

from __future__ import annotations

import base64
import io
import json

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from pictale.api.app import create_app
from pictale.core.config import Settings


def make_client(tmp_path, tiny_models, **overrides) -> TestClient:
    ckpts = tmp_path / "models" / "Stable-diffusion"
    ckpts.mkdir(parents=True, exist_ok=True)
    settings = Settings(data_dir=tmp_path, model=str(tiny_models["sd15"]), **overrides)
    return TestClient(create_app(settings))


@pytest.fixture(scope="module")
def client(tmp_path_factory, tiny_models):
    with make_client(tmp_path_factory.mktemp("api"), tiny_models) as c:
        yield c


def decode(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def info_of(response) -> dict:
    return json.loads(response.json()["info"])


def png_b64(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()
