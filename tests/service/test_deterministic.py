"""`--deterministic`: where batched rows are not bit-identical to lone runs (CUDA, half precision) the server runs
every request alone; where they are (the CPU in float32) batching stays on, since it changes no image."""

from __future__ import annotations

import pytest

from pictale.engine.engine import Engine
from tests.api.conftest import make_client


@pytest.mark.parametrize(
    ("identical", "deterministic", "batch_max"),
    [(False, True, 1), (False, False, 8), (True, True, 8), (True, False, 8)],
)
def test_deterministic_turns_batching_off_only_where_rows_would_differ(
    tmp_path, tiny_models, monkeypatch, identical, deterministic, batch_max
):
    # stands for a CUDA engine (fp16 rows differ from lone runs by 1/255) without needing a GPU
    monkeypatch.setattr(Engine, "batches_identically", property(lambda self: identical))
    with make_client(tmp_path, tiny_models, deterministic=deterministic) as client:
        assert client.app.state.service.queue.batch_max == batch_max
        r = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "width": 64, "height": 64, "steps": 1})
        assert r.status_code == 200
