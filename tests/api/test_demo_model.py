"""The demo model says what it is to API clients (every model list, the options, the infotext), and the
start-up warning about it appears once."""

from __future__ import annotations

import logging

from fastapi.testclient import TestClient

from pictale.api.app import create_app
from pictale.core.config import Settings
from pictale.storage.infotext import parse_infotext
from tests.api.conftest import info_of

DEMO = "pictale-demo (tiny random weights: draws noise)"


def test_every_client_facing_model_name_says_demo(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    with TestClient(create_app(Settings(data_dir=tmp_path))) as c:
        models = c.get("/sdapi/v1/sd-models").json()
        assert len(models) == 1
        title = models[0]["title"]
        assert models[0]["model_name"] == DEMO and title.startswith(f"{DEMO} [") and title.endswith("]")
        assert c.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == title
        openai = c.get("/v1/models").json()
        assert [m["id"] for m in openai["data"]] == [DEMO]
        r = c.post("/sdapi/v1/txt2img", json={"prompt": "a cat", "steps": 2, "width": 64, "height": 64, "seed": 3})
        info = info_of(r)
        assert info["sd_model_name"] == DEMO
        text = info["infotexts"][0]
        assert f"Model: {DEMO}" in text or f'Model: "{DEMO}"' in text
        assert parse_infotext(text)["Model"] == DEMO
        # and it can be selected back by what the lists show
        assert c.post("/sdapi/v1/options", json={"sd_model_checkpoint": title}).status_code == 200
        assert c.post("/sdapi/v1/options", json={"sd_model_checkpoint": DEMO}).status_code == 200
    warnings = [r.getMessage() for r in caplog.records if "NO MODEL FOUND" in r.getMessage()]
    assert len(warnings) == 1 and DEMO in warnings[0]
