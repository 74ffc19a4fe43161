"""The cluster files in launch/cluster/ are valid, offline: no cloud, no cluster, no network.

- aws.yaml, gcp.yaml, onprem.yaml go through the offline half of `ray up`: Ray's own `prepare_config`
  (merge with the provider's defaults.yaml, node-type min/max workers, docker checks; for the local provider
  the on-prem preparation) and `validate_config` (ray/autoscaler/ray-schema.json plus Ray's cross-field
  checks). The raw files are also validated against the schema, so a typo is reported before defaults hide it.
  For onprem.yaml the whole of Ray's `_bootstrap_config` runs (the local provider needs no SDK).
  Not checked here: AWS and GCP bootstrap (key pairs, IAM, subnets, security groups, instance-type resource
  detection), which needs boto3 / the Google API client and cloud credentials.
- rayjob.yaml's RayCluster goes through the KubeRay autoscaler's translation in Ray (what the autoscaler
  makes of its groups, replicas, rayStartParams and container resources, then `validate_config`); its field
  names are checked against a short list of KubeRay ray.io/v1 fields (below).
"""

from __future__ import annotations

import copy
import ipaddress
import json
import re
from pathlib import Path

import pytest
import yaml

CLUSTER = Path(__file__).resolve().parents[1] / "launch" / "cluster"
AUTOSCALER_FILES = {"aws.yaml": "aws", "gcp.yaml": "gcp", "onprem.yaml": "local"}

SWEEP = re.compile(r"twoworlds sweep \S+\.yaml --address auto out_dir=/shared/runs")
PIP_EDITABLE = re.compile(r"pip install\b[^|;&]*\s-e\s+\S*twoworlds")
MOUNT_SHARED = re.compile(r"\bmount\b.*\s/shared(\s|$)")
QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

# No installed package ships KubeRay's CRD schema. What the KubeRay autoscaler reads of the RayCluster is
# checked by Ray's own translation (test_rayjob_cluster_passes_the_kuberay_autoscalers_translation); for
# typos, the fields rayjob.yaml may use are listed here: only the ones it uses, so the list does not try
# to mirror KubeRay. To use another field, check its JSON name in KubeRay's ray-operator/apis/ray/v1/
# rayjob_types.go or raycluster_types.go (API ray.io/v1, KubeRay >= 1.1) and add it.
RAYJOB_SPEC_FIELDS = {"entrypoint", "rayClusterSpec", "submissionMode", "shutdownAfterJobFinishes",
                      "ttlSecondsAfterFinished"}
RAYCLUSTER_SPEC_FIELDS = {"rayVersion", "enableInTreeAutoscaling", "headGroupSpec", "workerGroupSpecs"}
HEAD_GROUP_FIELDS = {"rayStartParams", "template"}
WORKER_GROUP_FIELDS = {"groupName", "replicas", "minReplicas", "maxReplicas", "rayStartParams", "template"}
SUBMISSION_MODES = {"K8sJobMode", "HTTPMode", "InteractiveMode"}


def _text(name: str) -> str:
    return (CLUSTER / name).read_text()


def _load(name: str) -> dict:
    return yaml.safe_load(_text(name))


def _ray_version() -> str:
    from importlib.metadata import version

    return version("ray")


def _schema() -> dict:
    import ray.autoscaler

    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


# ---------------------------------------------------------------- ray up configs (aws, gcp, onprem)


@pytest.mark.parametrize("name", AUTOSCALER_FILES)
def test_autoscaler_config_passes_rays_own_validation(name):
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = _load(name)
    assert raw["provider"]["type"] == AUTOSCALER_FILES[name]
    jsonschema.validate(raw, _schema())  # the file as written: no unknown or mistyped keys
    prepared = prepare_config(copy.deepcopy(raw))  # what `ray up` does before validating
    validate_config(prepared)
    assert prepared["head_node_type"] in prepared["available_node_types"]
    for node_type in prepared["available_node_types"].values():
        assert 0 <= node_type["min_workers"] <= node_type["max_workers"] <= prepared["max_workers"]


def test_onprem_config_passes_rays_whole_bootstrap():
    from ray.autoscaler._private.commands import _bootstrap_config

    config = _bootstrap_config(_load("onprem.yaml"), no_config_cache=True)
    node_types = config["available_node_types"]
    assert list(node_types) == [config["head_node_type"]]  # the single on-prem node type
    workers = len(config["provider"]["worker_ips"])
    assert node_types[config["head_node_type"]]["min_workers"] == workers == config["max_workers"]


@pytest.mark.parametrize("name", ["aws.yaml", "gcp.yaml"])
def test_cloud_node_types_exist_and_workers_have_gpus(name):
    cfg = _load(name)
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] in types
    workers = {k: v for k, v in types.items() if k != cfg["head_node_type"]}
    assert workers, "no worker node type"
    for worker in workers.values():
        assert worker["resources"].get("GPU", 0) >= 1
        assert worker["max_workers"] >= max(1, worker.get("min_workers", 0))
        node = worker["node_config"]
        if cfg["provider"]["type"] == "aws":
            assert re.match(r"(g4dn|g5|g6e?|p3|p4d|p4de|p5)\.", node["InstanceType"]), node["InstanceType"]
        else:
            accelerators = node["guestAccelerators"]
            assert accelerators and accelerators[0]["acceleratorType"].startswith("nvidia-")
            assert accelerators[0]["acceleratorCount"] >= 1
            assert node["scheduling"]["onHostMaintenance"] == "TERMINATE"  # required for GPU VMs
    # The head runs the driver only.
    assert types[cfg["head_node_type"]]["resources"].get("GPU", 0) == 0


def test_onprem_provider_lists_documentation_addresses_only():
    provider = _load("onprem.yaml")["provider"]
    docs = [ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")]
    hosts = [provider["head_ip"], *provider["worker_ips"]]
    assert len(provider["worker_ips"]) >= 1 and len(set(hosts)) == len(hosts)
    for host in hosts:
        assert any(ipaddress.ip_address(host) in net for net in docs), f"{host} is not a placeholder address"


@pytest.mark.parametrize("name", AUTOSCALER_FILES)
def test_autoscaler_config_installs_project_and_mounts_shared(name):
    cfg = _load(name)
    assert cfg["file_mounts"].get("~/twoworlds") == ".", "the repository must be synced to ~/twoworlds"
    setup = cfg.get("setup_commands", []) + cfg.get("head_setup_commands", []) + cfg.get("worker_setup_commands", [])
    assert any(PIP_EDITABLE.search(c) for c in setup), "setup_commands must `pip install -e` the project"
    assert any("libopencv-dev" in c and "libturbojpeg0-dev" in c for c in setup), "FFCV system libraries"
    assert any("'torch>=2.4'" in c for c in setup), "the CUDA torch from PyPI"
    assert not any("torch==2.13.0" in c for c in setup), "the CPU-only pin has no place on GPU nodes"
    mounts = cfg.get("initialization_commands", []) + cfg.get("setup_commands", [])
    assert any(MOUNT_SHARED.search(c) for c in mounts), "/shared must be mounted on every node"
    # One image everywhere, with the same Ray as the driver's; the host mount is visible in the container.
    docker = cfg["docker"]
    assert docker["image"] == f"rayproject/ray:{_ray_version()}-py311-gpu"
    assert "-v /shared:/shared" in docker["run_options"]
    assert any("ray start --head" in c and "--autoscaling-config=~/ray_bootstrap_config.yaml" in c
               for c in cfg["head_start_ray_commands"])
    assert any("ray start --address=$RAY_HEAD_IP:6379" in c for c in cfg["worker_start_ray_commands"])


@pytest.mark.parametrize("name", AUTOSCALER_FILES)
def test_autoscaler_file_documents_the_workflow(name):
    text = _text(name)
    assert SWEEP.search(text), "the sweep command with --address auto out_dir=/shared/runs"
    for command in (f"ray up launch/cluster/{name}", f"ray down launch/cluster/{name}",
                    f"ray dashboard launch/cluster/{name}", "ray job submit", "--working-dir .", "--resume",
                    "tensorboard --logdir /shared/runs/<study>", "REPLACE_ME"):
        assert command in text, command
    placeholders = {"aws.yaml": ["fs-REPLACE_ME", "ami-REPLACE_ME"],
                    "gcp.yaml": ["REPLACE_ME-gcp-project", "FILESTORE_IP_REPLACE_ME"],
                    "onprem.yaml": ["REPLACE_ME_SSH_USER"]}[name]
    for placeholder in placeholders:
        assert placeholder in yaml.safe_dump(_load(name)), f"{placeholder} is not in the config itself"


# ---------------------------------------------------------------- KubeRay RayJob + PVC


def _rayjob_docs() -> tuple[dict, dict]:
    docs = [d for d in yaml.safe_load_all(_text("rayjob.yaml")) if d is not None]
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["PersistentVolumeClaim", "RayJob"], kinds
    by_kind = {d["kind"]: d for d in docs}
    return by_kind["RayJob"], by_kind["PersistentVolumeClaim"]


def _pod_specs(job: dict) -> dict[str, dict]:
    cluster = job["spec"]["rayClusterSpec"]
    pods = {"head": cluster["headGroupSpec"]["template"]["spec"]}
    for group in cluster["workerGroupSpecs"]:
        pods[group["groupName"]] = group["template"]["spec"]
    return pods


def _check_quantities(resources: dict, where: str) -> None:
    assert set(resources) <= {"limits", "requests", "claims"}, where
    for kind in ("limits", "requests"):
        for name, value in resources.get(kind, {}).items():
            assert isinstance(value, (str, int)) and not isinstance(value, bool), f"{where}.{kind}.{name}"
            assert QUANTITY.match(str(value)), f"{where}.{kind}.{name}={value!r} is not a quantity"


def test_rayjob_matches_kuberay_v1_crd():
    job, _ = _rayjob_docs()
    assert job["apiVersion"] == "ray.io/v1"
    assert DNS_LABEL.match(job["metadata"]["name"])
    spec = job["spec"]
    unknown = set(spec) - RAYJOB_SPEC_FIELDS
    assert not unknown, f"unknown RayJob spec fields: {unknown}"
    assert isinstance(spec["entrypoint"], str) and spec["entrypoint"].strip()
    assert spec.get("submissionMode", "K8sJobMode") in SUBMISSION_MODES
    assert spec["shutdownAfterJobFinishes"] is True
    assert isinstance(spec["ttlSecondsAfterFinished"], int) and spec["ttlSecondsAfterFinished"] >= 0
    if "runtimeEnvYAML" in spec:
        assert isinstance(yaml.safe_load(spec["runtimeEnvYAML"]), dict)

    cluster = spec["rayClusterSpec"]
    assert not set(cluster) - RAYCLUSTER_SPEC_FIELDS, set(cluster) - RAYCLUSTER_SPEC_FIELDS
    assert cluster["rayVersion"] == _ray_version()  # a string, the Ray the driver runs
    head = cluster["headGroupSpec"]
    assert not set(head) - HEAD_GROUP_FIELDS, set(head) - HEAD_GROUP_FIELDS
    groups = cluster["workerGroupSpecs"]
    assert groups, "no worker group"
    for group in groups:
        assert not set(group) - WORKER_GROUP_FIELDS, set(group) - WORKER_GROUP_FIELDS
        assert DNS_LABEL.match(group["groupName"])
        for key in ("replicas", "minReplicas", "maxReplicas"):
            assert isinstance(group[key], int) and not isinstance(group[key], bool), key
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        assert "template" in group
    assert len({g["groupName"] for g in groups}) == len(groups)

    for group in [head, *groups]:
        params = group.get("rayStartParams", {})
        assert isinstance(params, dict)
        for key, value in params.items():  # the CRD's map[string]string
            assert isinstance(value, str), f"rayStartParams.{key} must be a string, not {value!r}"

    images = set()
    for pod_name, pod in _pod_specs(job).items():
        containers = pod["containers"]
        assert containers and containers[0]["image"], pod_name
        images.add(containers[0]["image"])
        for container in containers:
            assert DNS_LABEL.match(container["name"]), container["name"]
            _check_quantities(container.get("resources", {}), f"{pod_name}.{container['name']}.resources")
    assert len(images) == 1, f"head and workers must run the same image: {images}"
    for group in groups:
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert int(limits["nvidia.com/gpu"]) >= 1, f"worker group {group['groupName']} has no GPU"


def test_rayjob_cluster_passes_the_kuberay_autoscalers_translation():
    """Ray's KubeRay autoscaler turns the RayCluster into node types as it would in the cluster: the head
    takes no trials, the GPU workers scale from minReplicas to maxReplicas."""
    from ray.autoscaler._private.kuberay.autoscaling_config import _derive_autoscaling_config_from_ray_cr

    job, _ = _rayjob_docs()
    spec = job["spec"]["rayClusterSpec"]
    ray_cr = {"apiVersion": "ray.io/v1", "kind": "RayCluster", "spec": copy.deepcopy(spec),
              "metadata": {"name": job["metadata"]["name"], "namespace": "default"}}
    autoscaling = _derive_autoscaling_config_from_ray_cr(ray_cr)  # ends in Ray's validate_config
    types = autoscaling["available_node_types"]
    assert types.pop(autoscaling["head_node_type"])["resources"]["CPU"] == 0
    assert set(types) == {g["groupName"] for g in spec["workerGroupSpecs"]}
    for group in spec["workerGroupSpecs"]:
        node = types[group["groupName"]]
        assert node["resources"]["GPU"] >= 1 and node["resources"]["CPU"] >= 1
        assert (node["min_workers"], node["max_workers"]) == (group["minReplicas"], group["maxReplicas"])


def test_rayjob_runs_the_sweep_on_the_shared_volume():
    job, pvc = _rayjob_docs()
    assert SWEEP.search(job["spec"]["entrypoint"])

    assert pvc["apiVersion"] == "v1"
    assert "ReadWriteMany" in pvc["spec"]["accessModes"]
    _check_quantities(pvc["spec"]["resources"], "pvc.spec.resources")
    assert pvc["spec"]["resources"]["requests"]["storage"]
    claim = pvc["metadata"]["name"]

    for pod_name, pod in _pod_specs(job).items():
        volumes = [v["name"] for v in pod["volumes"] if v.get("persistentVolumeClaim", {}).get("claimName") == claim]
        assert len(volumes) == 1, f"{pod_name} does not mount the PVC {claim}"
        mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
        assert mounts.get("/shared") == volumes[0], f"{pod_name} does not mount {claim} at /shared"


def test_rayjob_image_is_built_from_the_repository():
    job, _ = _rayjob_docs()
    dockerfile = _text("Dockerfile")
    base = re.search(r"^FROM\s+(\S+)", dockerfile, re.MULTILINE).group(1)
    assert base == f"rayproject/ray:{job['spec']['rayClusterSpec']['rayVersion']}-py311-gpu"
    assert re.search(r"pip install\b.*-e '\.\[ffcv\]'", dockerfile)
    assert "COPY" in dockerfile and "/home/ray/twoworlds" in dockerfile
    assert "cd /home/ray/twoworlds" in job["spec"]["entrypoint"]
    image = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]
    assert image in dockerfile, "the Dockerfile's build command tags the image the RayJob runs"
    ignored = _text("Dockerfile.dockerignore").split()
    assert {".venv", "runs", ".git"} <= set(ignored)


def test_readme_covers_every_file_and_the_command_sequence():
    text = _text("README.md")
    for needle in ("aws.yaml", "gcp.yaml", "onprem.yaml", "rayjob.yaml", "ray up", "ray job submit --address",
                   "--working-dir .", "tensorboard --logdir /shared/runs/<study>", "--resume", "ray down",
                   "kubectl apply -f launch/cluster/rayjob.yaml", "kubectl logs", "kubectl port-forward",
                   "out_dir=/shared/runs", "ReadWriteMany"):
        assert needle in text, needle
