"""An operator deploys dianxiao on Kubernetes (deploy/k8s) or Docker Compose (deploy/docker-compose.yml)
from files that were never applied to a cluster here.  So every file is checked offline, in CI:
each built-in object against the Kubernetes JSON schemas (kubernetes-validate, strict: an unknown
field is an error), KEDA's objects against the schema in deploy/k8s/schemas, and the parts that
must agree with the code (stage names, topics, consumer groups, settings, CLI arguments, health
endpoints, Secret keys, one pinned image tag) against the code itself."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from typer.testing import CliRunner

from agent.cli import _COMMAND_MODULES, app
from agent.pipeline import STAGE_FACTORIES, TEXT_STAGES
from agent.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("keda", "hpa")
KUBERNETES_VERSIONS = ("1.29", kubernetes_validate.latest_version())
SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): K8S / "schemas" / "keda-scaledobject-v1alpha1.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): K8S / "schemas" / "keda-triggerauthentication-v1alpha1.json",
}
WORKLOADS = ("Deployment", "StatefulSet")


# --- rendering: the subset of kustomize these files use (resources, images) -------------------


def _load(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def render(directory: Path) -> list[dict[str, Any]]:
    kust = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kust) - {"apiVersion", "kind", "resources", "images"}
    assert not unknown, f"{directory}: kustomization fields this renderer does not apply: {unknown}"
    docs: list[dict[str, Any]] = []
    for res in kust.get("resources", []):
        target = directory / res
        docs += render(target) if target.is_dir() else _load(target)
    for image in kust.get("images", []):
        for c in containers(docs):
            name, _, tag = c["image"].partition(":")
            if name == image["name"]:
                c["image"] = f"{image.get('newName', name)}:{image['newTag']}"
    return docs


@cache
def cli() -> Any:
    import importlib

    for module in _COMMAND_MODULES:  # as `dianxiao` does before it parses anything
        importlib.import_module(module)
    return app


@cache
def rendered(overlay: str) -> tuple[dict[str, Any], ...]:
    return tuple(render(K8S / "overlays" / overlay))


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["template"]["spec"]


def containers(docs: Any, init: bool = True) -> list[dict[str, Any]]:
    out = []
    for d in docs:
        if d["kind"] in WORKLOADS:
            spec = pod_spec(d)
            out += spec["containers"] + (spec.get("initContainers", []) if init else [])
    return out


def by_kind(docs: Any, kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def secrets_example() -> list[dict[str, Any]]:
    return _load(K8S / "base" / "secrets.example.yaml")


def configmap() -> dict[str, str]:
    return by_kind(rendered("keda"), "ConfigMap")["dianxiao"]["data"]


# --- schemas -----------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_built_in_object_is_valid_kubernetes_with_no_unknown_field(overlay, version):
    checked = 0
    for doc in [*rendered(overlay), *secrets_example()]:
        if (doc["apiVersion"], doc["kind"]) in SCHEMAS:
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} (Kubernetes {version}): {exc.message} "
                        f"at {'.'.join(map(str, exc.path))}")
        checked += 1
    assert checked >= 30


def test_keda_objects_match_the_keda_schema_and_the_schema_has_teeth():
    docs = [d for d in rendered("keda") if (d["apiVersion"], d["kind"]) in SCHEMAS]
    assert {d["kind"] for d in docs} == {"ScaledObject", "TriggerAuthentication"}
    for doc in docs:
        schema = json.loads(SCHEMAS[(doc["apiVersion"], doc["kind"])].read_text())
        jsonschema.Draft202012Validator.check_schema(schema)
        jsonschema.validate(doc, schema, cls=jsonschema.Draft202012Validator)
    # The mistakes the schema is there to catch: a number where KEDA wants a string, a typo.
    so = json.loads(json.dumps(next(d for d in docs if d["kind"] == "ScaledObject")))
    schema = json.loads(SCHEMAS[("keda.sh/v1alpha1", "ScaledObject")].read_text())
    so["spec"]["triggers"][0]["metadata"]["lagThreshold"] = 20
    with pytest.raises(jsonschema.ValidationError, match="is not of type 'string'"):
        jsonschema.validate(so, schema, cls=jsonschema.Draft202012Validator)
    so["spec"]["triggers"][0]["metadata"]["lagThreshold"] = "20"
    so["spec"]["maxReplicas"] = 4
    with pytest.raises(jsonschema.ValidationError, match="maxReplicas"):
        jsonschema.validate(so, schema, cls=jsonschema.Draft202012Validator)


def test_the_renderer_agrees_with_kubectl_kustomize_where_kubectl_is_installed():
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the Python renderer above is the only one checked")
    for overlay in OVERLAYS:
        out = subprocess.run([kubectl, "kustomize", str(K8S / "overlays" / overlay)],
                             capture_output=True, text=True, timeout=60, check=True).stdout
        theirs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(out) if d}
        ours = {(d["kind"], d["metadata"]["name"]): d for d in rendered(overlay)}
        assert theirs == ours


# --- agreement with the code ----------------------------------------------------------------


def _stage_class(name: str) -> str:
    return {
        "nlu": "agent.stages.nlu:NluStage", "dst": "agent.stages.dst:DstStage",
        "policy": "agent.stages.policy:PolicyStage", "hangup": "agent.stages.hangup:HangupStage",
        "dtmf": "agent.stages.dtmf:DtmfStage", "vad": "agent.stages.vad:VadStage",
        "asr": "agent.stages.asr:AsrStage", "tts": "agent.stages.tts:TtsStage",
        "outcome": "agent.stages.outcome:OutcomeStage",
        "phrasing": "agent.stages.phrasing:PhrasingStage",
    }[name]


def stage_reads(name: str) -> tuple[str, ...]:
    import importlib

    module, cls = _stage_class(name).split(":")
    return getattr(importlib.import_module(module), cls).reads


def test_every_stage_runs_scales_on_its_own_lag_and_keeps_a_disruption_budget():
    partitions = int(configmap()["DIANXIAO_PARTITIONS"])
    bootstrap = configmap()["DIANXIAO_BUS"].removeprefix("kafka://")
    keda, hpa = rendered("keda"), rendered("hpa")
    deployments = by_kind(keda, "Deployment")
    scaled, hpas, pdbs = by_kind(keda, "ScaledObject"), by_kind(hpa, "HorizontalPodAutoscaler"), by_kind(keda, "PodDisruptionBudget")
    assert set(STAGE_FACTORIES) <= {n.removeprefix("dianxiao-") for n in deployments}
    for stage in STAGE_FACTORIES:
        name = f"dianxiao-{stage}"
        dep = deployments[name]
        assert pod_spec(dep)["containers"][0]["args"] == ["stage", stage]
        assert "replicas" not in dep["spec"], f"{name}: the autoscaler owns replicas"
        so = scaled[name]["spec"]
        assert so["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        kafka = so["triggers"][0]["metadata"]
        assert kafka["consumerGroup"] == stage  # agent/runner.py: the group is the stage's name
        assert kafka["topic"] in stage_reads(stage), f"{stage} does not read {kafka['topic']}"
        assert kafka["bootstrapServers"] == bootstrap
        assert 2 <= so["minReplicaCount"] <= so["maxReplicaCount"] <= partitions
        h = hpas[name]["spec"]
        assert (h["minReplicas"], h["maxReplicas"]) == (so["minReplicaCount"], so["maxReplicaCount"])
        assert h["scaleTargetRef"] == so["scaleTargetRef"]
        assert pdbs[name]["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    for workload in (*deployments.values(), *by_kind(keda, "StatefulSet").values()):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert any(p["spec"]["selector"]["matchLabels"] == labels for p in pdbs.values()), workload["metadata"]["name"]


def _metrics_port(container: dict[str, Any]) -> int:
    for e in container.get("env", []):
        if e["name"] == "DIANXIAO_METRICS_PORT":
            return int(e["value"])
    return int(configmap()["DIANXIAO_METRICS_PORT"])


def test_stages_connectors_and_recorder_probe_the_health_endpoints_on_their_metrics_port():
    for doc in rendered("keda"):
        if doc["kind"] not in WORKLOADS or doc["metadata"]["name"] == "dianxiao-console":
            continue
        c = pod_spec(doc)["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports["metrics"] == _metrics_port(c), doc["metadata"]["name"]
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
        live = c["livenessProbe"]["httpGet"]
        assert live["port"] == "metrics" and live["path"].split("?")[0] == "/livez"
        if "?" in live["path"]:
            assert float(live["path"].split("stall_s=")[1]) > 0


def test_one_pinned_image_tag_for_everything_and_it_is_the_package_version():
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    for overlay in OVERLAYS:
        images = {c["image"] for c in containers(rendered(overlay))}
        assert images == {f"registry.example.com/dianxiao:{version}"}
    for path in (K8S / "base").glob("*.yaml"):
        for c in containers(d for d in _load(path) if "kind" in d):
            assert ":" not in c["image"], f"{path.name}: the tag belongs in kustomization.yaml only"
    for text in [p.read_text() for p in K8S.rglob("*.yaml")] + [(ROOT / "deploy/docker-compose.yml").read_text()]:
        assert ":latest" not in text


def test_every_secret_reference_names_a_secret_and_key_the_operator_is_told_to_create():
    defined = {(s["metadata"]["name"], k) for s in secrets_example() for k in s["stringData"]}
    kust = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    assert "secrets.example.yaml" not in kust["resources"]  # placeholders never reach a cluster
    refs = [e["valueFrom"]["secretKeyRef"] for c in containers(rendered("keda"))
            for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})]
    assert {r["name"] for r in refs} >= {"dianxiao-console", "dianxiao-sip", "dianxiao-media", "dianxiao-mqtt"}
    for r in refs:
        assert (r["name"], r["key"]) in defined, r
    for auth in by_kind(rendered("keda"), "TriggerAuthentication").values():
        for ref in auth["spec"]["secretTargetRef"]:
            assert (ref["name"], ref["key"]) in defined, ref
    # credentials come from Secrets only, never as literal values in a manifest
    for c in containers(rendered("keda")):
        for e in c.get("env", []):
            if any(w in e["name"] for w in ("PASSWORD", "TOKEN", "SECRET")):
                assert "valueFrom" in e, f"{e['name']} is a literal"


def _env_names(docs: Any) -> set[str]:
    names = set(configmap())
    for c in containers(docs):
        names |= {e["name"] for e in c.get("env", [])}
    return {n for n in names if n.startswith("DIANXIAO_")}


def test_every_dianxiao_variable_is_a_real_setting():
    # agent/settings.py refuses an unknown DIANXIAO_* variable at start-up: a typo here would
    # crash-loop every pod.
    known = {f"DIANXIAO_{f.upper()}" for f in Settings.model_fields}
    compose = yaml.safe_load((ROOT / "deploy/docker-compose.yml").read_text())
    compose_env = set(compose["x-stage"]["environment"])
    for name in _env_names(rendered("keda")) | compose_env:
        assert name in known, f"{name} is not a setting (agent/settings.py)"


def _cli_args(container: dict[str, Any]) -> list[str]:
    if "args" in container:
        return list(container["args"])
    words = shlex.split(container["command"][-1])
    return words[words.index("dianxiao") + 1:words.index("--password-stdin") + 1]


def test_every_container_command_is_one_the_cli_accepts():
    # `--help` is answered only once click has parsed every option before it: an unknown
    # command or option fails here as it would in the pod.
    runner = CliRunner()
    seen = set()
    for c in containers(rendered("keda")):
        args = _cli_args(c)
        if tuple(args) in seen:
            continue
        seen.add(tuple(args))
        result = runner.invoke(cli(), [*args, "--help"])
        assert result.exit_code == 0, f"dianxiao {' '.join(args)}: {result.output}"
    assert {"sip", "ws", "mqtt", "record", "console"} <= {a[0] for a in seen}


# --- docker compose -----------------------------------------------------------------------


def test_compose_runs_every_text_stage_and_the_recorder_with_commands_the_cli_accepts():
    compose = yaml.safe_load((ROOT / "deploy/docker-compose.yml").read_text())
    services = compose["services"]
    assert set(compose) <= {"x-stage", "services", "volumes"}
    stage_services = {}
    runner = CliRunner()
    for name, svc in services.items():
        assert set(svc) <= {"build", "image", "restart", "depends_on", "environment", "stop_signal",
                            "stop_grace_period", "healthcheck", "command", "deploy", "volumes", "ports",
                            "hostname", "profiles"}, name
        if name == "kafka":
            continue
        cmd = svc["command"]
        assert isinstance(cmd, list) and all(isinstance(a, str) for a in cmd), name
        if cmd[0] == "stage":
            assert cmd[1] in STAGE_FACTORIES, f"{name}: unknown stage {cmd[1]}"
            stage_services[cmd[1]] = svc
        result = runner.invoke(cli(), [*cmd, "--help"])
        assert result.exit_code == 0, f"{name}: dianxiao {' '.join(cmd)}: {result.output}"
        for vol in svc.get("volumes", []):
            assert vol.split(":")[0] in compose["volumes"], f"{name}: volume {vol}"
    assert set(TEXT_STAGES) <= set(stage_services), "a text call needs every text stage"
    hc = compose["x-stage"]["healthcheck"]["test"]
    assert "/readyz" in hc[-1] and compose["x-stage"]["environment"]["DIANXIAO_METRICS_PORT"] in hc[-1]
