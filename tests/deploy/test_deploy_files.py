"""deploy/ (Dockerfile, KubeRay RayService, PVC) agrees with the code it deploys: offline, no cluster, no Docker.

What a typo here would break only shows on a real cluster, minutes into a rollout: a Serve import path that
does not exist, a PICTALE_* variable pydantic-settings silently ignores (extra="ignore"), an args key
app_builder does not know, a data volume mounted elsewhere than PICTALE_DATA_DIR, a Ray version in the YAML
that differs from the image's.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from pictale.core.config import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
IMPORT_MODULE = "pictale.cluster.app"
IMPORT_FUNCTION = "app_builder"
# The Ray settings of issue 14 (env PICTALE_<NAME>), as the cluster work defines them.
RAY_FIELDS = (
    "ray_address",
    "ray_replicas",
    "ray_min_replicas",
    "ray_max_replicas",
    "ray_gpus_per_replica",
    "ray_cpus_per_replica",
    "ray_ingress_cpus",
    "ray_max_ongoing",
    "ray_avatar_sets_per_replica",
    "ray_retries",
)


def _docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d]


@pytest.fixture(scope="module")
def service() -> dict:
    docs = _docs("rayservice.yaml")
    assert len(docs) == 1
    return docs[0]


@pytest.fixture(scope="module")
def serve_config(service) -> dict:
    return yaml.safe_load(service["spec"]["serveConfigV2"])


@pytest.fixture(scope="module")
def application(serve_config) -> dict:
    apps = serve_config["applications"]
    assert [a["name"] for a in apps] == ["pictale"]
    return apps[0]


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return (DEPLOY / "Dockerfile").read_text()


def _pod_specs(service: dict) -> dict[str, dict]:
    cluster = service["spec"]["rayClusterConfig"]
    specs = {"head": cluster["headGroupSpec"]["template"]["spec"]}
    for group in cluster["workerGroupSpecs"]:
        specs[group["groupName"]] = group["template"]["spec"]
    return specs


def _containers(service: dict) -> list[tuple[str, dict, dict]]:
    """(group, pod spec, container) for every container of every Ray pod."""
    return [(group, spec, c) for group, spec in _pod_specs(service).items() for c in spec["containers"]]


def _env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def test_kind_and_api_version(service):
    assert service["apiVersion"] == "ray.io/v1"
    assert service["kind"] == "RayService"


def test_import_path_names_the_app_builder(application):
    module, _, function = application["import_path"].partition(":")
    assert (module, function) == (IMPORT_MODULE, IMPORT_FUNCTION)
    assert application["route_prefix"] == "/"
    # The module behind the import path defines the builder (read, not imported: no Ray needed here).
    source = ROOT / "src" / Path(*module.split(".")).with_suffix(".py")
    assert source.is_file(), f"{source.relative_to(ROOT)} is missing: the Serve import path points nowhere"
    assert re.search(rf"^def {function}\(", source.read_text(), re.MULTILINE), f"no `def {function}` in {source}"


def test_ray_version_matches_the_images_base(service, dockerfile):
    froms = re.findall(r"^FROM\s+(\S+)", dockerfile, re.MULTILINE)
    assert len(froms) == 1, froms
    match = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py\d+-\S+", froms[0])
    assert match, f"FROM {froms[0]} is not a rayproject/ray release image"
    assert service["spec"]["rayClusterConfig"]["rayVersion"] == match.group(1)
    # The pip pin that keeps the base image's Ray names the same version.
    assert f'"ray[serve]=={match.group(1)}"' in dockerfile


def test_dockerfile_turns_ray_usage_stats_off(dockerfile):
    assert re.search(r"^ENV\s+RAY_USAGE_STATS_ENABLED=0\b", dockerfile, re.MULTILINE)


def test_the_ray_settings_exist():
    missing = [f for f in RAY_FIELDS if f not in Settings.model_fields]
    assert not missing, f"Settings lacks {missing}"


def test_pictale_env_names_are_settings_fields(service):
    assert Settings.model_config["env_prefix"] == "PICTALE_"
    names = {name for _, _, c in _containers(service) for name in _env(c) if name.startswith("PICTALE_")}
    assert {"PICTALE_DATABASE_URL", "PICTALE_DATA_DIR"} <= names
    known = {f"PICTALE_{field.upper()}" for field in Settings.model_fields}
    assert names <= known, f"not Settings fields (pydantic-settings would ignore them): {sorted(names - known)}"


def test_args_keys_are_settings_fields(application):
    args = application.get("args") or {}
    unknown = sorted(set(args) - set(Settings.model_fields))
    assert not unknown, f"args app_builder cannot take: {unknown}"


def test_every_pod_has_the_same_environment_and_image(service):
    containers = _containers(service)
    assert len({c["image"] for _, _, c in containers}) == 1, "head and workers must run one image (one Ray)"
    for group, _, c in containers:
        env = _env(c)
        assert env["PICTALE_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "pictale-db", "key": "url"}, group
        assert env["RAY_USAGE_STATS_ENABLED"]["value"] == "0", group


def test_worker_group_asks_for_a_gpu(service):
    cluster = service["spec"]["rayClusterConfig"]
    assert cluster["headGroupSpec"]["rayStartParams"]["num-gpus"] == "0"
    (group,) = [g for g in cluster["workerGroupSpecs"] if g["groupName"] == "gpu-group"]
    assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    spec = group["template"]["spec"]
    for c in spec["containers"]:
        assert str(c["resources"]["limits"]["nvidia.com/gpu"]) == "1"
    assert any(t["key"] == "nvidia.com/gpu" for t in spec.get("tolerations", []))


def test_data_volume_is_mounted_at_the_data_dir_everywhere(service):
    claims = {d["metadata"]["name"]: d for d in _docs("storage.yaml") if d["kind"] == "PersistentVolumeClaim"}
    assert claims["pictale-data"]["spec"]["accessModes"] == ["ReadWriteMany"]
    for group, spec, c in _containers(service):
        volumes = {
            v["name"] for v in spec["volumes"] if v.get("persistentVolumeClaim", {}).get("claimName") == "pictale-data"
        }
        assert volumes, f"{group}: no volume of the pictale-data claim"
        data_dir = _env(c)["PICTALE_DATA_DIR"]["value"]
        mounts = [m["mountPath"] for m in c.get("volumeMounts", []) if m["name"] in volumes]
        assert mounts == [data_dir], f"{group}/{c['name']}: pictale-data mounted at {mounts}, data dir {data_dir}"


def test_serve_service_exposes_port_8000(service):
    ports = service["spec"]["serveService"]["spec"]["ports"]
    assert [(p["name"], p["port"]) for p in ports] == [("serve", 8000)]
    head = service["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert {"name": "serve", "containerPort": 8000} in head["ports"]
