"""How settings become the Serve application: replica counts or autoscaling bounds, GPUs, the settings the
replicas rebuild, the multiplexed ids of jobs (no Ray started here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pictale.cluster.app import replica_bounds, scaling, settings_data, worker_gpus
from pictale.cluster.wire import model_id, training_id
from pictale.core.config import Settings
from pictale.core.types import AvatarKind, AvatarRef, ModelEntry


def test_fixed_replicas_by_default():
    assert scaling(Settings(ray_replicas=3)) == {"num_replicas": 3}
    assert replica_bounds(Settings()) == (1, 1)


def test_autoscaling_between_bounds():
    s = Settings(ray_min_replicas=1, ray_max_replicas=4, ray_max_ongoing=2)
    assert replica_bounds(s) == (1, 4)
    assert scaling(s) == {
        "autoscaling_config": {
            "min_replicas": 1,
            "max_replicas": 4,
            "initial_replicas": 1,
            "target_ongoing_requests": 2,
            "upscale_delay_s": 5,
            "downscale_delay_s": 300,
        }
    }
    assert scaling(Settings(ray_min_replicas=2, ray_max_replicas=2)) == {"num_replicas": 2}  # no range: fixed
    assert replica_bounds(Settings(ray_max_replicas=3)) == (1, 3)
    assert replica_bounds(Settings(ray_min_replicas=2)) == (2, 2)


def test_gpus_per_replica_setting_wins_without_a_cluster():
    assert worker_gpus(Settings(ray_gpus_per_replica=0.5)) == 0.5
    assert worker_gpus(Settings()) == 0.0  # no Ray initialised: CPU replicas


def test_replicas_rebuild_the_same_settings(tmp_path):
    s = Settings(data_dir=tmp_path, model="tiny", ray_replicas=2, clip_model="tiny", max_width=1024)
    again = Settings(**settings_data(s))
    assert again == s and again.data_dir == Path(tmp_path)


@pytest.mark.parametrize(
    "bad",
    [
        {"ray_replicas": 0},
        {"ray_max_ongoing": 0},
        {"ray_avatar_sets_per_replica": 0},
        {"ray_max_replicas": 0},
        {"ray_min_replicas": 0},
    ],
)
def test_counts_must_be_positive(bad):
    with pytest.raises(ValueError, match="must be at least 1"):
        Settings(**bad)


def test_min_above_max_is_refused():
    with pytest.raises(ValueError, match=r"ray_min_replicas \(3\) is above ray_max_replicas \(2\)"):
        Settings(ray_min_replicas=3, ray_max_replicas=2)


def _ref(kind: AvatarKind, digest: str, weight: float) -> AvatarRef:
    return AvatarRef(kind=kind, name=digest, digest=digest, weight=weight, files=())


def test_a_jobs_model_id_is_its_checkpoint_and_avatar_set():
    a = ModelEntry(title="a", model_name="a", filename="/m/a.safetensors", source="single_file")
    b = ModelEntry(title="b", model_name="b", filename="/m/b.safetensors", source="single_file")
    toy, lucy = _ref(AvatarKind.LORA, "d1", 0.8), _ref(AvatarKind.FACE, "d2", 0.4)
    assert model_id(a) == model_id(a, ()) != model_id(b)
    assert model_id(a, (toy, lucy)) == model_id(a, (_ref(AvatarKind.FACE, "d2", 0.9), toy))  # order, weights
    assert model_id(a, (toy,)) != model_id(a, (toy, lucy)) != model_id(b, (toy, lucy))
    assert model_id(a, (toy,)).startswith(model_id(a) + "+")
    assert training_id("t1") == "train:t1"
