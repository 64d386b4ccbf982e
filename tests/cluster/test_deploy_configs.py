"""The deployment configs in cluster/ pass a schema check without kubectl or a cloud account, and turn
on Ray token authentication everywhere."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import jsonschema
import ray
import yaml

CLUSTER = Path(__file__).resolve().parents[2] / "cluster"
STR = {"type": "string"}

# the RayJob fields we use, as KubeRay's CRD (ray.io/v1) types them
CONTAINER = {
    "type": "object",
    "required": ["name", "image"],
    "properties": {
        "name": STR,
        "image": STR,
        "resources": {"type": "object", "properties": {"limits": {"type": "object"}}},
        "env": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "additionalProperties": False,
                "properties": {"name": STR, "value": STR, "valueFrom": {"type": "object"}},
            },
        },
        "volumeMounts": {"type": "array", "items": {"type": "object", "required": ["name", "mountPath"]}},
    },
}
POD = {
    "type": "object",
    "required": ["spec"],
    "properties": {
        "spec": {
            "type": "object",
            "required": ["containers"],
            "properties": {"containers": {"type": "array", "items": CONTAINER}, "volumes": {"type": "array"}},
        }
    },
}
START_PARAMS = {"type": "object", "additionalProperties": STR}  # KubeRay: map[string]string
RAYJOB = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "ray.io/v1"},
        "kind": {"const": "RayJob"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "required": ["entrypoint", "rayClusterSpec"],
            "additionalProperties": False,
            "properties": {
                "entrypoint": STR,
                "shutdownAfterJobFinishes": {"type": "boolean"},
                "runtimeEnvYAML": STR,
                "rayClusterSpec": {
                    "type": "object",
                    "required": ["headGroupSpec", "workerGroupSpecs"],
                    "additionalProperties": False,
                    "properties": {
                        "rayVersion": STR,
                        "authOptions": {
                            "type": "object",
                            "properties": {"mode": {"enum": ["disabled", "token"]}},
                        },
                        "headGroupSpec": {
                            "type": "object",
                            "required": ["rayStartParams", "template"],
                            "properties": {"rayStartParams": START_PARAMS, "template": POD},
                        },
                        "workerGroupSpecs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["groupName", "template"],
                                "properties": {
                                    "groupName": STR,
                                    "replicas": {"type": "integer"},
                                    "minReplicas": {"type": "integer"},
                                    "maxReplicas": {"type": "integer"},
                                    "rayStartParams": START_PARAMS,
                                    "template": POD,
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


def test_rayjob_matches_the_crd_fields_and_has_token_auth() -> None:
    job = yaml.safe_load((CLUSTER / "kuberay-rayjob.yaml").read_text())
    jsonschema.validate(job, RAYJOB)
    spec = job["spec"]["rayClusterSpec"]
    assert spec["rayVersion"] == ray.__version__
    assert spec["authOptions"]["mode"] == "token"
    yaml.safe_load(job["spec"]["runtimeEnvYAML"])  # the runtime env is YAML too
    assert "PASSWORD" not in job["spec"]["runtimeEnvYAML"]  # credentials come from a Secret


def test_ray_up_config_passes_rays_own_schema_and_has_token_auth() -> None:
    config = yaml.safe_load((CLUSTER / "ray-cluster.yaml").read_text())
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    for command in config["head_start_ray_commands"] + config["worker_start_ray_commands"]:
        if "ray start" in command:
            assert "RAY_AUTH_MODE=token" in command, command
    assert not any("auth_token" in str(v) and "~" not in str(v) for v in config["file_mounts"].values())


def test_local_stack_script_is_valid_bash_with_token_auth_and_no_force_stop() -> None:
    script = (CLUSTER / "local-stack.sh").read_text()
    subprocess.run(["bash", "-n", str(CLUSTER / "local-stack.sh")], check=True)
    assert "RAY_AUTH_MODE=token" in script and "--app-name basic-auth" in script
    assert not re.search(r"ray stop", script)


def test_no_secret_is_committed_in_cluster_configs() -> None:
    for path in sorted(p for p in CLUSTER.rglob("*") if p.is_file()):
        text = path.read_text()
        assert not re.search(r"(?i)(password|token)\s*[:=]\s*['\"]?[A-Za-z0-9_\-]{16,}", text), path
