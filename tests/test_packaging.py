"""The deployment artefacts say what they must: the Dockerfile and compose.yaml (image essentials, service wiring), the
KubeRay manifests (validated against the fields KubeRay's ray.io/v1 CRDs define and the operator's own checks), and
cluster.yaml in step with them. A slow test builds and runs the image where podman is installed."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from rag_ray.config import Settings

ROOT = Path(__file__).resolve().parents[1]


# --- Dockerfile ---

def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile as stages of (INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    stages: list[list[tuple[str, str]]] = [[]]
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, args = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        stages[-1].append((instruction.upper(), " ".join(args.split())))
    return stages[1:]


def _args(stage: list[tuple[str, str]], instruction: str) -> list[str]:
    return [args for name, args in stage if name == instruction]


def test_dockerfile_is_multi_stage_locked_non_root_and_healthchecked():
    stages = dockerfile_stages()
    assert len(stages) >= 2, "a build stage and a runtime stage"
    build, runtime = stages[0], stages[-1]
    syncs = [run for run in _args(build, "RUN") if "uv sync" in run]
    assert syncs and all("--frozen" in s and "--no-dev" in s for s in syncs), "installs exactly the lock, no dev tools"
    assert any("--no-editable" in s for s in syncs), "the runtime stage needs no source tree"
    assert not any("uv" in run.split() for run in _args(runtime, "RUN")), "uv stays in the build stage"
    assert any("--from=build" in c and "/app/.venv" in c for c in _args(runtime, "COPY"))

    user = _args(runtime, "USER")[-1].split(":")[0]
    assert user not in ("root", "0"), "the server runs as a non-root user"
    assert user.isdigit(), "numeric, so Kubernetes' runAsNonRoot can check it"
    (healthcheck,) = _args(runtime, "HEALTHCHECK")
    assert "docker/healthcheck.py" in healthcheck and "--start-period" in healthcheck
    (entrypoint,) = _args(runtime, "ENTRYPOINT")
    assert "tini" in entrypoint and "/app/docker/entrypoint.sh" in entrypoint
    env = " ".join(_args(runtime, "ENV"))
    assert "API_HOST=0.0.0.0" in env, "the embedded default listens outside the container"
    assert "RAG_DATA_DIR=/data" in env and "/data" in " ".join(_args(runtime, "VOLUME"))
    assert "8000" in _args(runtime, "EXPOSE")[0]
    assert _args(runtime, "STOPSIGNAL") == ["SIGTERM"]


def test_dockerfile_copies_files_that_exist_and_ignores_the_venv():
    for stage in dockerfile_stages():
        for copy in _args(stage, "COPY"):
            if "--from=" in copy:
                continue
            sources = [a for a in copy.split()[:-1] if not a.startswith("--")]
            for src in sources:
                assert (ROOT / src).exists(), f"COPY {src}: no such file"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", "data", ".git"} <= set(ignored), "the build context must not carry the 7 GB venv or data"
    assert os.access(ROOT / "docker" / "entrypoint.sh", os.X_OK)
    uv_version = re.search(r"ARG UV_VERSION=(\S+)", (ROOT / "Dockerfile").read_text())
    assert uv_version and re.fullmatch(r"\d+\.\d+\.\d+", uv_version.group(1)), "uv is pinned"


# --- compose.yaml ---

def _compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def _interpolate(value: str, values: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} forms."""
    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        if name in values:
            return values[name]
        if op == ":?":
            raise KeyError(f"{name} is required: {arg}")
        return arg or ""

    return re.sub(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", one, value)


def test_compose_runs_the_app_with_milvus_postgres_and_optional_ollama():
    services = _compose()["services"]
    assert {"app", "milvus", "postgres", "ollama"} <= set(services)
    assert services["ollama"]["profiles"] == ["ollama"], "Ollama only on demand"
    assert all("profiles" not in services[name] for name in ("app", "milvus", "postgres"))
    app = services["app"]
    assert app["build"] == "." and app["ports"][0].endswith(":8000")
    assert {dep: cond["condition"] for dep, cond in app["depends_on"].items()} == \
        {"milvus": "service_healthy", "postgres": "service_healthy"}
    assert all("healthcheck" in services[name] for name in ("milvus", "postgres"))
    assert "milvus run standalone" in " ".join(services["milvus"]["command"])
    grace = float(app["environment"]["RAG_SHUTDOWN_GRACE_S"])
    assert float(app["stop_grace_period"].removesuffix("s")) > grace, "the server stops itself before SIGKILL"
    published = {name for name, svc in services.items() if svc.get("ports")}
    assert published == {"app"}, "only the API is published"


def test_compose_wires_the_app_to_its_services_and_the_settings_accept_it():
    services = _compose()["services"]
    secrets = {"SECRET_KEY": "s" * 48, "RAG_ADMIN_PASSWORD": "a-real-admin-password", "POSTGRES_PASSWORD": "pg-pw"}
    env = {k: _interpolate(str(v), secrets) for k, v in services["app"]["environment"].items()}
    with pytest.raises(KeyError, match="SECRET_KEY"):  # compose refuses to start without the secrets
        _interpolate(str(services["app"]["environment"]["SECRET_KEY"]), {})

    aliases = {str(f.validation_alias) for f in Settings.model_fields.values()}
    assert set(env) <= aliases, f"not settings: {set(env) - aliases}"
    settings = Settings(**env)  # type: ignore[arg-type]  # the aliases, as the container's environment sets them
    assert settings.app_env == "production" and settings.validate_for_production() == []
    assert not settings.uses_milvus_lite and settings.milvus_address == "http://milvus:19530"

    from sqlalchemy.engine import make_url

    db = make_url(settings.metadata_url)
    postgres = {k: _interpolate(str(v), secrets) for k, v in services["postgres"]["environment"].items()}
    assert (db.drivername, db.host, db.port) == ("postgresql+psycopg", "postgres", 5432)
    assert (db.username, db.password, db.database) == \
        (postgres["POSTGRES_USER"], postgres["POSTGRES_PASSWORD"], postgres["POSTGRES_DB"])
    assert services["milvus"]["environment"]["ETCD_ENDPOINTS"].split(":")[0] in services
    assert services["milvus"]["environment"]["MINIO_ADDRESS"].split(":")[0] in services


# --- KubeRay: RayService and RayJob against the ray.io/v1 CRD fields ---
# A small structural schema taken from KubeRay's CRDs (ray-operator/config/crd/bases/ray.io_rayservices.yaml and
# ray.io_rayjobs.yaml, version v1, ray-project/kuberay at feeaf72, 2026-08): every field KubeRay defines at these
# levels (unknown ones are refused, as the API server prunes them silently), the required ones, types and enums.
# Kubernetes core types below them (PodSpec, Service, ...) are checked only for what a Ray pod needs.

def obj(required: tuple[str, ...] = (), open_: bool = False, **props: Any) -> dict[str, Any]:
    return {"type": "object", "required": set(required), "properties": props, "open": open_}


STR, INT, BOOL = {"type": "string"}, {"type": "integer"}, {"type": "boolean"}
ANY_OBJ = {"type": "object", "open": True, "properties": {}, "required": set()}
STR_MAP = {"type": "object", "values": STR}


def array(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


def enum(*values: str) -> dict[str, Any]:
    return {"type": "string", "enum": set(values)}


CONTAINER = obj(("name", "image"), open_=True, name=STR, image=STR)  # image: required by Kubernetes, not the CRD
POD_TEMPLATE = obj(("spec",), metadata=ANY_OBJ, spec=obj(("containers",), open_=True, containers=array(CONTAINER)))
HEAD_GROUP = obj(("template",), enableIngress=BOOL, headService=ANY_OBJ, ingressOptions=ANY_OBJ, labels=STR_MAP,
                 rayStartParams=STR_MAP, resources=STR_MAP, serviceType=STR, template=POD_TEMPLATE)
WORKER_GROUP = obj(("groupName", "maxReplicas", "minReplicas", "template"), groupName=STR, idleTimeoutSeconds=INT,
                   labels=STR_MAP, maxReplicas=INT, minReplicas=INT, numOfHosts=INT, priority=INT,
                   rayStartParams=STR_MAP, replicas=INT, resources=STR_MAP, scaleStrategy=ANY_OBJ, suspend=BOOL,
                   template=POD_TEMPLATE)
RAY_CLUSTER_SPEC = obj(("headGroupSpec",),
                       authOptions=obj(enableK8sTokenAuth=BOOL, mode=enum("disabled", "token"), secretName=STR),
                       autoscalerOptions=ANY_OBJ, enableInTreeAutoscaling=BOOL, gcsFaultToleranceOptions=ANY_OBJ,
                       headGroupSpec=HEAD_GROUP, headServiceAnnotations=STR_MAP, historyServerOptions=ANY_OBJ,
                       managedBy=STR, networkPolicy=ANY_OBJ, rayVersion=STR, suspend=BOOL, tlsOptions=ANY_OBJ,
                       upgradeStrategy=obj(type=enum("Recreate", "None")), workerGroupSpecs=array(WORKER_GROUP))
METADATA = obj(("name",), open_=True, name=STR, namespace=STR, labels=STR_MAP, annotations=STR_MAP)
RAY_SERVICE = obj(("apiVersion", "kind", "metadata", "spec"), apiVersion=enum("ray.io/v1"), kind=enum("RayService"),
                  metadata=METADATA,
                  spec=obj(("rayClusterConfig",), deploymentUnhealthySecondThreshold=INT,
                           excludeHeadPodFromServeSvc=BOOL, managedBy=STR, rayClusterConfig=RAY_CLUSTER_SPEC,
                           rayClusterDeletionDelaySeconds=INT, serveConfigV2=STR, serveService=ANY_OBJ,
                           serviceUnhealthySecondThreshold=INT, suspend=BOOL, upgradeStrategy=ANY_OBJ))
RAY_JOB = obj(("apiVersion", "kind", "metadata", "spec"), apiVersion=enum("ray.io/v1"), kind=enum("RayJob"),
              metadata=METADATA,
              spec=obj(activeDeadlineSeconds=INT, backoffLimit=INT, clusterSelector=STR_MAP, deletionStrategy=ANY_OBJ,
                       entrypoint=STR, entrypointNumCpus={"type": "number"}, entrypointNumGpus={"type": "number"},
                       entrypointResources=STR, jobId=STR, managedBy=STR, metadata=STR_MAP,
                       preRunningDeadlineSeconds=INT, rayClusterSpec=RAY_CLUSTER_SPEC, runtimeEnvYAML=STR,
                       shutdownAfterJobFinishes=BOOL,
                       submissionMode=enum("K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"),
                       submitterConfig=ANY_OBJ, submitterPodTemplate=ANY_OBJ, suspend=BOOL,
                       ttlSecondsAfterFinished=INT))
TYPES: dict[str, type | tuple[type, ...]] = {"object": dict, "array": list, "string": str, "integer": int,
                                             "boolean": bool, "number": (int, float)}


def schema_errors(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    kind = schema["type"]
    if not isinstance(value, TYPES[kind]) or (kind in ("integer", "number") and isinstance(value, bool)):
        return [f"{path or '.'}: expected {kind}, got {type(value).__name__}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{path}: {value!r} not one of {sorted(schema['enum'])}"]
    errors: list[str] = []
    if kind == "array":
        for i, item in enumerate(value):
            errors += schema_errors(item, schema["items"], f"{path}[{i}]")
    elif kind == "object" and "values" in schema:
        for key, item in value.items():
            errors += schema_errors(item, schema["values"], f"{path}.{key}")
    elif kind == "object":
        errors += [f"{path}.{key}: required" for key in sorted(schema["required"] - set(value))]
        for key, item in value.items():
            if key in schema["properties"]:
                errors += schema_errors(item, schema["properties"][key], f"{path}.{key}")
            elif not schema["open"]:
                errors.append(f"{path}.{key}: not a field of the CRD")
    return errors


def cluster_spec_errors(spec: dict[str, Any]) -> list[str]:
    """The operator's own checks on a RayCluster spec (controllers/ray/utils/validation.go)."""
    errors = []
    for group in spec.get("workerGroupSpecs", []):
        lo, hi, n = group["minReplicas"], group["maxReplicas"], group.get("replicas", group["minReplicas"])
        if not 0 <= lo <= n <= hi:
            errors.append(f"worker group {group['groupName']}: need 0 <= minReplicas <= replicas <= maxReplicas")
    if spec.get("authOptions", {}).get("mode") == "token":
        version = tuple(int(p) for p in spec.get("rayVersion", "0").split(".")[:2])
        if version < (2, 52):
            errors.append("authOptions.mode token needs rayVersion >= 2.52.0")
    return errors


def _manifest(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "deploy" / "kuberay" / name).read_text())


def _locked_version(package: str) -> str:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    return next(p["version"] for p in lock["package"] if p["name"] == package)


def _pod_templates(cluster: dict[str, Any]) -> list[dict[str, Any]]:
    return [cluster["headGroupSpec"]["template"], *(g["template"] for g in cluster.get("workerGroupSpecs", []))]


def _check_cluster(cluster: dict[str, Any]) -> None:
    assert cluster_spec_errors(cluster) == []
    assert cluster["rayVersion"] == _locked_version("ray"), "the Ray in the image (uv.lock)"
    images = {c["image"] for t in _pod_templates(cluster) for c in t["spec"]["containers"]}
    assert len(images) == 1, "head and workers run one image"
    for template in _pod_templates(cluster):
        assert template["spec"]["securityContext"]["runAsNonRoot"] is True
        container = template["spec"]["containers"][0]
        assert {"secretRef": {"name": "rag-ray-settings"}} in container["envFrom"], "settings from one Secret"


def test_the_schema_refuses_what_kuberay_refuses():
    service = _manifest("rayservice.yaml")
    broken = yaml.safe_load(yaml.safe_dump(service))
    broken["spec"]["serveConfig"] = "v1 field"
    del broken["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["groupName"]
    broken["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["replicas"] = "1"
    errors = schema_errors(broken, RAY_SERVICE)
    assert any("spec.serveConfig: not a field" in e for e in errors)
    assert any("groupName: required" in e for e in errors)
    assert any("replicas: expected integer" in e for e in errors)


def test_rayservice_matches_the_crd_and_deploys_serve_config_yaml():
    service = _manifest("rayservice.yaml")
    assert schema_errors(service, RAY_SERVICE) == []
    cluster = service["spec"]["rayClusterConfig"]
    _check_cluster(cluster)

    serve_config = yaml.safe_load(service["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(serve_config)
    shipped = yaml.safe_load((ROOT / "deployments" / "serve_config.yaml").read_text())
    assert serve_config == shipped, "serveConfigV2 must stay deployments/serve_config.yaml"
    app = serve_config["applications"][0]
    assert "llm_deployment" in app["args"], "LLM deployments are configured once, not by name"
    assert not any(d["name"].startswith("llm-") for d in app["deployments"])

    http_port = serve_config["http_options"]["port"]
    for template in _pod_templates(cluster):
        ports = {p["name"]: p["containerPort"] for p in template["spec"]["containers"][0]["ports"]}
        assert ports["serve"] == http_port, "KubeRay's serve Service selects the port named 'serve'"


def test_rayjob_matches_the_crd_and_runs_the_ingest_job():
    job = _manifest("rayjob-ingest.yaml")
    assert schema_errors(job, RAY_JOB) == []
    spec = job["spec"]
    assert ("rayClusterSpec" in spec) != ("clusterSelector" in spec), "exactly one of rayClusterSpec, clusterSelector"
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] >= 0
    assert spec.get("activeDeadlineSeconds", 1) > 0 and spec.get("backoffLimit", 0) >= 0
    yaml.safe_load(spec["runtimeEnvYAML"])
    _check_cluster(spec["rayClusterSpec"])

    argv = shlex.split(spec["entrypoint"])
    assert argv[:3] == ["python", "-m", "jobs.ingest_files"]
    from jobs.ingest_files import parse_args, request_from_args

    request = request_from_args(parse_args(argv[3:]))  # the job's own parser accepts the arguments
    mounts = {m["mountPath"] for t in _pod_templates(spec["rayClusterSpec"])
              for m in t["spec"]["containers"][0]["volumeMounts"]}
    assert str(parse_args(argv[3:]).path) in mounts, "every node reads the documents (parse tasks run on workers)"
    assert request.recursive


def test_cluster_yaml_is_in_step_with_the_image_and_kuberay():
    cluster = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    setup = " ".join(cluster["setup_commands"])
    assert "uv sync --frozen --no-dev" in setup, "the same locked install as the image"
    assert "RAY_AUTH_MODE=token" in setup, "token auth, as the RayService's authOptions"
    head = " ".join(cluster["head_start_ray_commands"])
    service = _manifest("rayservice.yaml")["spec"]["rayClusterConfig"]
    assert service["authOptions"]["mode"] == "token"
    head_group = service["headGroupSpec"]
    ports = {p["name"]: p["containerPort"] for p in head_group["template"]["spec"]["containers"][0]["ports"]}
    assert f"--port={ports['gcs-server']}" in head
    assert "--dashboard-host=0.0.0.0" in head and head_group["rayStartParams"]["dashboard-host"] == "0.0.0.0"


def test_every_node_gets_the_serve_knobs_init_ray_sets():
    """``init_ray`` gives a local Ray's Serve a 2 Hz controller and replicas that hand their request metrics to Ray
    once a second; a cluster's nodes get the same from cluster.yaml's start commands and the KubeRay pods' env."""
    from jobs.ray_executor import (
        SERVE_CONTROL_LOOP_ENV,
        SERVE_CONTROL_LOOP_INTERVAL_S,
        SERVE_METRICS_EXPORT_ENV,
        SERVE_METRICS_EXPORT_INTERVAL_MS,
    )

    cluster = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    head, workers = (" ".join(cluster[f"{role}_start_ray_commands"]) for role in ("head", "worker"))
    metrics = f"{SERVE_METRICS_EXPORT_ENV}={SERVE_METRICS_EXPORT_INTERVAL_MS}"
    assert metrics in head and metrics in workers
    assert f"{SERVE_CONTROL_LOOP_ENV}={SERVE_CONTROL_LOOP_INTERVAL_S}" in head
    service = _manifest("rayservice.yaml")["spec"]["rayClusterConfig"]
    envs = [{e["name"]: e["value"] for e in t["spec"]["containers"][0]["env"]} for t in _pod_templates(service)]
    assert all(env[SERVE_METRICS_EXPORT_ENV] == str(SERVE_METRICS_EXPORT_INTERVAL_MS) for env in envs), envs
    assert envs[0][SERVE_CONTROL_LOOP_ENV] == str(SERVE_CONTROL_LOOP_INTERVAL_S)


# --- the image itself, where a daemonless container tool is installed ---

def _podman(*args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
    extra = shlex.split(os.environ.get("RAG_TEST_PODMAN_GLOBAL_ARGS", ""))  # e.g. --runtime runc
    return subprocess.run(["podman", *extra, *args], capture_output=True, text=True, timeout=timeout, check=check)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("podman") is None, reason="podman is not installed (apt-get install podman)")
@pytest.mark.skipif(not (os.environ.get("RAG_TEST_IMAGE") or os.environ.get("RAG_TEST_IMAGE_BUILD")),
                    reason="opt-in: the image is ~8 GB (set RAG_TEST_IMAGE=<built image> or RAG_TEST_IMAGE_BUILD=1)")
def test_the_image_builds_runs_healthy_as_non_root_and_stops_on_sigterm():
    """Builds the Dockerfile (layers are cached between runs; or takes the image RAG_TEST_IMAGE names), runs it on the
    local platform with the fake models, waits for the image's HEALTHCHECK to pass, then `podman stop` (SIGTERM) must
    end it by itself with status 0. RAG_TEST_IMAGE_BUILD_ARGS / RAG_TEST_PODMAN_RUN_ARGS / RAG_TEST_PODMAN_GLOBAL_ARGS
    adapt it to a machine (base image, ulimits, OCI runtime)."""
    tag = os.environ.get("RAG_TEST_IMAGE", "")
    if not tag:
        tag = "localhost/rag-ray:test"
        build_args = shlex.split(os.environ.get("RAG_TEST_IMAGE_BUILD_ARGS", ""))
        # --format docker: the OCI image format has no HEALTHCHECK, podman would drop it
        built = _podman("build", "--format", "docker", *build_args, "-t", tag, str(ROOT), timeout=3600, check=False)
        assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    run_args = shlex.split(os.environ.get("RAG_TEST_PODMAN_RUN_ARGS", ""))
    assert _podman("image", "inspect", tag, "--format", "{{.Config.User}}").stdout.strip().split(":")[0] != "0"
    name = f"rag-ray-test-{os.getpid()}"
    env = ["-e", "RAG_PLATFORM=local", "-e", "EMBEDDING_PROVIDER=fake", "-e", "EMBEDDING_MODEL=hash-bow",
           "-e", "LLM_PROVIDER=fake", "-e", "LLM_MODEL=echo", "-e", "RAG_SHUTDOWN_GRACE_S=10"]
    started = _podman("run", "-d", "--name", name, *run_args, *env, tag, check=False)
    assert started.returncode == 0, started.stderr
    try:
        deadline = time.monotonic() + 300
        while _podman("healthcheck", "run", name, check=False).returncode != 0:
            state = _podman("inspect", name, "--format", "{{.State.Status}}").stdout.strip()
            assert state == "running", _podman("logs", name).stdout[-3000:]
            assert time.monotonic() < deadline, _podman("logs", name).stdout[-3000:]
            time.sleep(2)  # polling the image's own HEALTHCHECK
        assert _podman("exec", name, "id", "-u").stdout.strip() == "10001"
        _podman("stop", "--time", "30", name, timeout=60)
        assert _podman("inspect", name, "--format", "{{.State.ExitCode}}").stdout.strip() == "0", \
            _podman("logs", name).stdout[-3000:]
    finally:
        _podman("rm", "-f", name, check=False)
