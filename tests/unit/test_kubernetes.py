"""deploy/kubernetes/ follows from the settings and the worker: its variables are settings, the
values it sets that differ from the settings' defaults are the ones listed here (with why), each
replica advertises its own address through the headless Service and keeps DATA_DIR on a volume
of its own, the probes ask paths the worker serves without the token, and a stopping pod gets
longer than SHUTDOWN_TIMEOUT.

No cluster runs here: the files are read as Kubernetes reads them (``$(VAR)`` references
expanded from the variables before them, a Secret's values from the example Secret).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

import streams
from streams.ops.web import OPEN_PATHS
from streams.settings import ENVIRONMENT, Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "kubernetes"
NAMESPACE = "mirror"
#: Values the manifests set apart from the settings' defaults, and why.
DELIBERATE = {
    "KAFKA_BROKER": "the cluster's brokers, not 127.0.0.1",
    "WEB_HOST": "other pods and the Service reach the worker: all interfaces",
    "DATA_DIR": "the pod's own volume",
    "LOG_FORMAT": "one JSON object per line, for the cluster's log collector",
    "CANONICAL_URL": "the pod's own name through the headless Service",
    "DATABASE_URL": "from the Secret",
    "API_TOKEN": "from the Secret",
    "KAFKA_SASL_PASSWORD": "from the Secret",
}
#: Variables of the pod that are not settings: the downward API's, for CANONICAL_URL.
POD_VARIABLES = {"POD_NAME", "POD_NAMESPACE"}


def documents(name: str) -> list[dict[str, Any]]:
    """Return the YAML documents of ``deploy/kubernetes/<name>``."""
    return [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d is not None]


def objects() -> dict[tuple[str, str], dict[str, Any]]:
    """Return the objects ``kubectl apply -k`` makes, by (kind, name)."""
    kustomization = documents("kustomization.yaml")[0]
    found = {}
    for name in kustomization["resources"]:
        for document in documents(name):
            found[document["kind"], document["metadata"]["name"]] = document
    return found


def statefulset() -> dict[str, Any]:
    return objects()["StatefulSet", "entity-mirror"]


def container() -> dict[str, Any]:
    (worker,) = statefulset()["spec"]["template"]["spec"]["containers"]
    return worker  # type: ignore[no-any-return]


def example_secret() -> dict[str, str]:
    (secret,) = documents("secret.example.yaml")
    assert secret["kind"] == "Secret"
    return secret["stringData"]  # type: ignore[no-any-return]


def pod_environment(pod: str) -> dict[str, str]:
    """Return the environment the worker container of ``pod`` gets, as the kubelet makes it:
    the ConfigMap's variables, then ``env`` in order, ``$(NAME)`` expanded from those before."""
    found = objects()
    environment: dict[str, str] = {}
    for source in container().get("envFrom", []):
        environment.update(found["ConfigMap", source["configMapRef"]["name"]]["data"])
    secret = example_secret()
    downward = {"metadata.name": pod, "metadata.namespace": NAMESPACE}
    for variable in container()["env"]:
        if "value" in variable:
            value = re.sub(
                r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                lambda m: environment.get(m[1], m[0]),
                variable["value"],
            )
        elif "fieldRef" in variable["valueFrom"]:
            value = downward[variable["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            ref = variable["valueFrom"]["secretKeyRef"]
            value = secret[ref["key"]]
        environment[variable["name"]] = value
    return environment


def pod_settings(pod: str, tmp_path: Path) -> Settings:
    env = pod_environment(pod)
    return Settings.from_env({k: v for k, v in env.items() if k not in POD_VARIABLES}, cwd=tmp_path)


def test_the_kustomization_makes_the_statefulset_its_services_and_its_budget() -> None:
    kinds = sorted(kind for kind, _ in objects())
    assert kinds == ["ConfigMap", "PodDisruptionBudget", "Service", "Service", "StatefulSet"]
    # Every manifest is either applied or the example Secret, which never is.
    applied = set(documents("kustomization.yaml")[0]["resources"])
    listed = {path.name for path in DEPLOY.glob("*.yaml")}
    assert listed - applied == {"kustomization.yaml", "secret.example.yaml"}


def test_every_variable_is_a_setting_and_every_default_the_settings_own(tmp_path: Path) -> None:
    env = pod_environment("entity-mirror-0")
    assert set(env) - POD_VARIABLES <= set(ENVIRONMENT), set(env) - set(ENVIRONMENT)
    defaults = Settings.from_env({}, cwd=tmp_path)
    settings = pod_settings("entity-mirror-0", tmp_path)
    field_of = {
        item.metadata["env"].name: item.name
        for item in dataclasses.fields(Settings)
        if "env" in item.metadata
    }
    differ = {
        name
        for name in set(env) - POD_VARIABLES
        if getattr(settings, field_of[name]) != getattr(defaults, field_of[name])
    }
    # A value equal to the default is there to be seen (SHUTDOWN_TIMEOUT sizes the grace
    # period); any other is one of the deliberate ones.
    assert differ == set(DELIBERATE), differ ^ set(DELIBERATE)


def test_secrets_come_from_the_secret() -> None:
    refs = {
        v["name"]: v["valueFrom"]["secretKeyRef"]
        for v in container()["env"]
        if "secretKeyRef" in v.get("valueFrom", {})
    }
    assert set(refs) == {"DATABASE_URL", "API_TOKEN", "KAFKA_SASL_PASSWORD"}
    assert all(ref["name"] == "entity-mirror" for ref in refs.values())
    assert set(example_secret()) == {ref["key"] for ref in refs.values()}
    # SASL is optional (PLAINTEXT by default); the database and the token are not.
    assert [name for name, ref in refs.items() if ref.get("optional")] == ["KAFKA_SASL_PASSWORD"]
    configmap = objects()["ConfigMap", "entity-mirror"]["data"]
    assert not set(refs) & set(configmap), "a secret in the ConfigMap"


@pytest.mark.parametrize("pod", ["entity-mirror-0", "entity-mirror-2"])
def test_each_replica_advertises_its_own_name_through_the_headless_service(
    pod: str, tmp_path: Path
) -> None:
    settings = pod_settings(pod, tmp_path)
    headless = objects()["Service", statefulset()["spec"]["serviceName"]]
    assert headless["spec"]["clusterIP"] == "None"
    name = headless["metadata"]["name"]
    assert settings.advertised_url == f"http://{pod}.{name}.{NAMESPACE}.svc:{settings.web_port}"
    assert settings.web_host == "0.0.0.0"
    (port,) = container()["ports"]
    assert port["containerPort"] == settings.web_port


def test_the_services_reach_the_pods_on_the_web_port() -> None:
    found = objects()
    labels = statefulset()["spec"]["template"]["metadata"]["labels"]
    assert statefulset()["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (port,) = container()["ports"]
    for name in ("entity-mirror", "entity-mirror-headless"):
        service = found["Service", name]
        assert service["spec"]["selector"].items() <= labels.items()
        assert [p["targetPort"] for p in service["spec"]["ports"]] == [port["name"]]
    budget = found["PodDisruptionBudget", "entity-mirror"]["spec"]
    assert budget["selector"]["matchLabels"].items() <= labels.items()
    assert budget["maxUnavailable"] == 1


def test_each_replica_keeps_data_dir_on_a_volume_of_its_own(tmp_path: Path) -> None:
    data_dir = pod_settings("entity-mirror-1", tmp_path).data_dir
    mounts = {m["mountPath"]: m["name"] for m in container()["volumeMounts"]}
    assert data_dir in mounts, f"DATA_DIR {data_dir!r} is on no volume"
    claims = {t["metadata"]["name"]: t for t in statefulset()["spec"]["volumeClaimTemplates"]}
    # A claim per replica; a volume of the pod template would be shared or lost with the pod.
    assert mounts[data_dir] in claims
    assert claims[mounts[data_dir]]["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert "volumes" not in statefulset()["spec"]["template"]["spec"]


def test_a_stopping_pod_gets_longer_than_shutdown_timeout(tmp_path: Path) -> None:
    configmap = objects()["ConfigMap", "entity-mirror"]["data"]
    assert "SHUTDOWN_TIMEOUT" in configmap  # explicit: the grace period is sized from it
    grace = statefulset()["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > pod_settings("entity-mirror-0", tmp_path).shutdown_timeout


def test_the_probes_ask_the_worker_s_probes_without_the_token(tmp_path: Path) -> None:
    worker = container()
    (port,) = worker["ports"]
    probes = {
        kind: (worker[kind]["httpGet"]["path"], worker[kind]["httpGet"]["port"])
        for kind in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert probes == {
        "startupProbe": ("/health", port["name"]),
        "livenessProbe": ("/health", port["name"]),
        "readinessProbe": ("/ready", port["name"]),
    }
    # No header carries API_TOKEN: the paths are the ones the token guard lets through.
    assert {path for path, _ in probes.values()} <= OPEN_PATHS
    assert all("httpHeaders" not in worker[kind]["httpGet"] for kind in probes)
    # A liveness probe gives the worker longer than one answer may take to come.
    live = worker["livenessProbe"]
    assert live["periodSeconds"] * live["failureThreshold"] >= 30


def test_the_image_is_the_package_s_version_and_runs_the_worker_command() -> None:
    worker = container()
    assert worker["image"].rsplit(":", 1)[1] == streams.__version__
    assert worker["command"] == ["faust", "-A", "streams.app", "worker"]
