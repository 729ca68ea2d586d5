"""The shipped cluster configuration (deploy/) checked through the parts that will read it: Dagster
loads the instance config with its own schemas (the K8sRunLauncher's from dagster-k8s, the storage's
from dagster-postgres, the run queue, run monitoring and retries) and fails on a wrong key; the
Kubernetes manifests and probes hold only fields of the Kubernetes API (the official client's
models); the code server's liveness probe fails when the server is dead.

No Kubernetes cluster exists here: the launcher's loading of in-cluster credentials is replaced
(that is the only fake) and the Helm chart is not rendered (no helm binary): the test maps the
values to the instance settings the chart writes, and Dagster validates those."""

from __future__ import annotations

import copy
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import dagster as dg
import kubernetes.client
import pytest
import yaml

from dw_platform.devenv import embedded

DEPLOY = embedded.PROJECT_ROOT / "deploy"
INSTANCE = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
VALUES = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())
CODE_LOCATION = VALUES["dagster-user-deployments"]["deployments"][0]


@pytest.fixture
def no_kubernetes_api(monkeypatch):
    """The launcher reads the pod's service-account credentials at start; there is no pod here."""
    import dagster_k8s.launcher

    monkeypatch.setattr(dagster_k8s.launcher, "load_kubernetes_config", lambda **_: None)


@pytest.fixture
def instance_settings(server, monkeypatch):
    """The secrets the instance config reads, pointing at the session's PostgreSQL (database
    `dagster`, the pipeline role)."""
    monkeypatch.setenv("DAGSTER_PG_HOST", "localhost")
    monkeypatch.setenv("DAGSTER_PG_PORT", os.environ["DW_PG_PORT"])
    monkeypatch.setenv("DAGSTER_PG_USER", os.environ["DW_PG_USER"])
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", os.environ["DW_PG_PASSWORD"])
    monkeypatch.setenv("DAGSTER_PG_DB", "dagster")
    monkeypatch.setenv("DAGSTER_K8S_NAMESPACE", "dw")


def load_instance(config: dict, folder: Path) -> dg.DagsterInstance:
    """Dagster's own loading of a dagster.yaml: schema validation, then each configured class.
    The test's PostgreSQL listens on a unix socket only: its directory is added as a libpq
    parameter (the one change to the shipped file)."""
    config = copy.deepcopy(config)
    config["storage"]["postgres"]["postgres_db"]["params"]["host"] = os.environ["DW_PG_HOST"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dagster.yaml").write_text(yaml.safe_dump(config))
    instance = dg.DagsterInstance.from_config(str(folder))
    instance.run_launcher, instance.run_coordinator  # noqa: B018 (loaded lazily: load them now)
    return instance


def test_the_cluster_instance_config_loads_and_fails_dead_run_workers(instance_settings, no_kubernetes_api, tmp_path):
    from dagster_k8s import K8sRunLauncher

    with load_instance(INSTANCE, tmp_path) as instance:
        launcher = instance.run_launcher
        assert isinstance(launcher, K8sRunLauncher)
        assert launcher.job_namespace == "dw"
        assert launcher.inst_data.config_dict["env_secrets"] == ["dw-platform-settings"]
        # A dead run worker: the daemon asks the launcher about every run in progress.
        assert launcher.supports_check_run_worker_health
        assert instance.run_monitoring_enabled and instance.run_monitoring_poll_interval_seconds <= 60
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
        assert instance.get_runs_count() >= 0  # the storage answers


WRONG_KEYS = {
    "a run launcher key": ("run_launcher", "config", "job_namespace"),
    "a storage key": ("storage", "postgres", "postgres_db", "db_name"),
    "a run queue key": ("run_coordinator", "config", "max_concurrent_runs"),
    "a run monitoring key": ("run_monitoring", "poll_interval_seconds"),
}


@pytest.mark.parametrize("path", WRONG_KEYS.values(), ids=WRONG_KEYS.keys())
def test_a_misspelt_key_in_the_cluster_instance_config_fails_to_load(
    path, instance_settings, no_kubernetes_api, tmp_path
):
    config = copy.deepcopy(INSTANCE)
    parent = config
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1] + "s_typo"] = parent.pop(path[-1])
    with pytest.raises(dg.DagsterInvalidConfigError):
        load_instance(config, tmp_path).dispose()


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def chart_instance(values: dict) -> dict:
    """The instance settings the Helm chart writes from `values` (its configmap-instance template:
    each camelCase key of the launcher, queue, monitoring, retries and retention as the snake_case key, the
    secrets' names as a list, the release's service account, config map and DAGSTER_HOME)."""
    daemon = values["dagsterDaemon"]
    launcher = {snake(k): v for k, v in values["runLauncher"]["config"]["k8sRunLauncher"].items()}
    launcher["env_secrets"] = [secret["name"] for secret in launcher["env_secrets"]]
    queued = daemon["runCoordinator"]["config"]["queuedRunCoordinator"]
    return {
        "run_launcher": {
            "module": "dagster_k8s",
            "class": values["runLauncher"]["type"],
            "config": {
                "service_account_name": values["global"]["serviceAccountName"],
                "instance_config_map": "dagster-instance",
                "postgres_password_secret": values["global"]["postgresqlSecretName"],
                "dagster_home": "/opt/dagster/dagster_home",
                "job_namespace": {"env": "DAGSTER_K8S_NAMESPACE"},
                **launcher,
            },
        },
        "run_coordinator": {
            "module": "dagster.core.run_coordinator",
            "class": daemon["runCoordinator"]["type"],
            "config": {snake(k): v for k, v in queued.items()},
        },
        "run_monitoring": {snake(k): v for k, v in daemon["runMonitoring"].items()},
        "run_retries": {snake(k): v for k, v in daemon["runRetries"].items()},
        "retention": {"sensor": {"purge_after_days": values["retention"]["sensor"]["purgeAfterDays"]}},
    }


def test_the_helm_values_give_the_chart_the_instance_settings_of_deploy_dagster_yaml(
    instance_settings, no_kubernetes_api, tmp_path
):
    rendered = chart_instance(VALUES)
    assert rendered == {key: INSTANCE[key] for key in rendered}
    with load_instance({**INSTANCE, **rendered}, tmp_path):  # and Dagster accepts them
        pass
    pg = VALUES["postgresql"]
    assert not pg["enabled"] and not VALUES["generatePostgresqlPasswordSecret"]
    assert pg["postgresqlParams"] == {"sslmode": INSTANCE["storage"]["postgres"]["postgres_db"]["params"]["sslmode"]}


def unknown_fields(value, type_name: str, path: str = "") -> list[str]:
    """Fields of `value` that the Kubernetes API type `type_name` does not have, by the models of
    the official Kubernetes client (kubernetes.client.V1Deployment, V1Probe, ...)."""
    if type_name.startswith("list["):
        return [p for i, v in enumerate(value) for p in unknown_fields(v, type_name[5:-1], f"{path}[{i}]")]
    if type_name.startswith("dict("):
        inner = type_name[type_name.index(",") + 1 : -1].strip()
        return [p for k, v in value.items() for p in unknown_fields(v, inner, f"{path}.{k}")]
    model = getattr(kubernetes.client, type_name, None)
    if model is None:  # str, int, object, ...
        return []
    if not isinstance(value, dict):
        return [f"{path} (not an object)"]
    attributes = {json_name: attribute for attribute, json_name in model.attribute_map.items()}
    problems = []
    for key, inner_value in value.items():
        if key not in attributes:
            problems.append(f"{path}.{key}")
        else:
            problems += unknown_fields(inner_value, model.openapi_types[attributes[key]], f"{path}.{key}")
    return problems


def test_the_kubernetes_manifests_and_probes_hold_only_kubernetes_api_fields():
    workers = list(yaml.safe_load_all((DEPLOY / "k8s" / "celery-workers.yaml").read_text()))
    assert [d["kind"] for d in workers] == ["Deployment", "Deployment"]
    for deployment in workers:
        assert unknown_fields(deployment, "V1Deployment") == []
    for probe in ("livenessProbe", "startupProbe", "readinessProbe"):
        fields = {k: v for k, v in CODE_LOCATION[probe].items() if k != "enabled"}  # `enabled`: the chart's
        assert unknown_fields(fields, "V1Probe") == [], probe
    for resources in (CODE_LOCATION["resources"], VALUES["runLauncher"]["config"]["k8sRunLauncher"]["resources"]):
        assert unknown_fields(resources, "V1ResourceRequirements") == []
    # the check can fail
    assert unknown_fields({"exec": {"command": []}, "periodSecond": 5}, "V1Probe") == [".periodSecond"]
    broken = copy.deepcopy(workers[0])
    broken["spec"]["template"]["spec"]["containers"][0]["envFrom"][0]["secretRefs"] = {}
    assert unknown_fields(broken, "V1Deployment") == [".spec.template.spec.containers[0].envFrom[0].secretRefs"]


def test_every_setting_reaches_the_pods_as_a_secret_never_as_a_literal():
    documented = (DEPLOY / "k8s" / "secrets.md").read_text()
    settings = set(re.findall(r"^(DW_\w+)=", (embedded.PROJECT_ROOT / ".env.example").read_text(), re.M))
    settings |= set(re.findall(r"^# (DW_\w+)=", (embedded.PROJECT_ROOT / ".env.example").read_text(), re.M))
    local_only = {"DW_HOME", "DW_MONGODB_URI", "DW_VIDEO_LANDING_DIR", "DW_SOFTCART_WEBLOGS_DIR"}
    missing = sorted(s for s in settings - local_only if f"`{s}`" not in documented)
    assert missing == []
    assert CODE_LOCATION["envSecrets"] == [{"name": "dw-platform-settings"}]
    assert INSTANCE["run_launcher"]["config"]["env_secrets"] == ["dw-platform-settings"]
    literal = [k for k in CODE_LOCATION.get("env", {}) if k != "DW_EXECUTOR"]
    assert literal == [], "settings other than the executor's name belong in the secret"
    for deployment in yaml.safe_load_all((DEPLOY / "k8s" / "celery-workers.yaml").read_text()):
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["envFrom"] == [{"secretRef": {"name": "dw-platform-settings"}}]
        assert all("value" not in e or e["name"] == "DW_EXECUTOR" for e in container["env"])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_code_servers_liveness_probe_passes_while_it_serves_and_fails_once_it_is_dead(server, tmp_path):
    """The probe the chart runs in the user-code deployment (a failing one makes Kubernetes restart
    the container), against a real `dagster api grpc` of the code location."""
    probe = CODE_LOCATION["livenessProbe"]["exec"]["command"]
    assert probe[:3] == ["dagster", "api", "grpc-health-check"] and str(CODE_LOCATION["port"]) in probe
    assert CODE_LOCATION["livenessProbe"]["periodSeconds"] * CODE_LOCATION["livenessProbe"]["failureThreshold"] <= 120
    port = free_port()
    command = [str(Path(sys.executable).with_name("dagster")), *probe[1:]]
    command[command.index(str(CODE_LOCATION["port"]))] = str(port)
    with open(tmp_path / "grpc.log", "wb") as log:
        code_server = subprocess.Popen(
            [sys.executable, "-m", "dagster", "api", "grpc", *CODE_LOCATION["dagsterApiGrpcArgs"], "--port", str(port)],
            cwd=embedded.PROJECT_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 300
        while subprocess.run(command, capture_output=True, timeout=60).returncode != 0:
            assert code_server.poll() is None, (tmp_path / "grpc.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the code server never answered its health check"
            time.sleep(1)
        code_server.kill()  # kill -9
        code_server.wait()
        assert subprocess.run(command, capture_output=True, timeout=60).returncode != 0
    finally:
        embedded.stop_process(code_server, group=True)


def test_the_wheel_holds_every_file_the_code_reads_beside_its_modules(tmp_path):
    """The image installs dw_platform from its wheel (not the checkout): the YAML files the code
    reads at run time must be package data."""
    source = embedded.PROJECT_ROOT
    shutil.copytree(
        source / "dw_platform", tmp_path / "src" / "dw_platform", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(source / "pyproject.toml", tmp_path / "src")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "-w",
            str(tmp_path),
            ".",
        ],
        cwd=tmp_path / "src",
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("dw_platform-*.whl")
    packaged = set(zipfile.ZipFile(wheel).namelist())
    needed = {
        str(path.relative_to(source))
        for path in (source / "dw_platform").rglob("*")
        if path.is_file() and path.suffix not in (".py", ".pyc")
    }
    assert needed and needed <= packaged, sorted(needed - packaged)
