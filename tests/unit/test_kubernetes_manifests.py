"""The Kubernetes manifests of packaging/kubernetes, checked offline (there is no cluster here):
every document against the Kubernetes API's own schemas (kubernetes-validate, strict: an unknown
field is an error) for the Kubernetes releases below, custom resources against the
``openAPIV3Schema`` of the CRDs vendored in tests/data/crds; each kustomization lists every file;
the ConfigMap's ocrd.toml loads with ocrd's own settings loader; the probes' paths are served by
ocrd's real app without an API key; vllm-router's arguments parse with vllm-router's own parser.
Each check is also shown failing on a deliberately broken input."""

from __future__ import annotations

import copy
import hashlib
import importlib.resources
import json
import os
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import jsonschema
import pytest
import yaml
from kubernetes_validate.utils import SchemaNotFoundError
from kubernetes_validate.utils import validate as validate_builtin
from referencing import Registry, Resource

from ocrd.config.loading import load_settings, unknown_env_variables
from ocrd.config.remote import load_tokens_file
from ocrd.config.settings import Settings
from ocrd.config.tokens import generate_token, hash_token
from ocrd.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "packaging" / "kubernetes"
CRDS = ROOT / "tests" / "data" / "crds"
# The three newest Kubernetes releases whose API schemas kubernetes-validate 1.37.0 bundles.
KUBERNETES_VERSIONS = ("1.35.0", "1.36.0", "1.37.0")
# sha256 of the vendored CRDs, as tests/data/crds/README.md lists them with their source commits.
CRD_DIGESTS = {
    "gateway-api-inference-extension/inference.networking.k8s.io_inferencepools.yaml":
        "55e0dbf39c50c4bbdd60106493a4573df4bb44479f9ce46762f1af718883e5cd",
    "gateway-api/gateway.networking.k8s.io_httproutes.yaml":
        "a424a0d6c953b162e71d1d97bb7e75012d8f1ac264e7274f2763d1b96ab39852",
    "llm-d-router/llm-d.ai_inferenceobjectives.yaml":
        "c1e763412fcbe2b55e9282850156269a10053be2d052547cb80a2ca639c09990",
}
# The $id of kubernetes-validate's definitions: custom resources' metadata is checked against its
# ObjectMeta, as the API server does (the CRDs say only "type: object").
DEFINITIONS_ID = "https://kubernetes.io/api/_definitions.json"
OBJECT_META = {"$ref": DEFINITIONS_ID + "#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}


def manifest_files() -> list[Path]:
    return sorted(p for p in MANIFESTS.rglob("*.yaml") if p.name != "kustomization.yaml")


@cache
def _parsed(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def documents(path: Path) -> list[dict[str, Any]]:
    return copy.deepcopy(_parsed(path))  # a test may change what it gets


def find(kind: str, name: str) -> dict[str, Any]:
    found = [doc for path in manifest_files() for doc in documents(path)
             if doc["kind"] == kind and doc["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} documents"
    return found[0]


def container(workload: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in workload["spec"]["template"]["spec"]["containers"] if c["name"] == name)


# --- schemas ------------------------------------------------------------------------------


def _closed(node: Any) -> Any:
    """The API server prunes (and `kubectl apply` refuses) fields a structural schema does not
    name; JSON Schema allows them unless told otherwise."""
    if isinstance(node, dict):
        node = {key: _closed(value) for key, value in node.items()}
        if ("properties" in node and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")):
            node["additionalProperties"] = False
        return node
    if isinstance(node, list):
        return [_closed(item) for item in node]
    return node


@cache
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> the vendored CRD's schema for that version."""
    schemas = {}
    for path in CRDS.rglob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        for version in crd["spec"]["versions"]:
            schema = _closed(version["schema"]["openAPIV3Schema"])
            schema["properties"]["metadata"] = OBJECT_META
            key = (f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])
            schemas[key] = schema
    return schemas


@cache
def object_meta_registry(version: str) -> Registry:
    folder = importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema"
    definitions = json.loads((folder / f"v{version}-local-strict" / "_definitions.json").read_text())
    return Registry().with_resource(DEFINITIONS_ID, Resource.from_contents(definitions))


def validate(doc: dict[str, Any], version: str) -> None:
    """Raises jsonschema.ValidationError for an invalid document, SchemaNotFoundError for one
    that neither the Kubernetes API nor a vendored CRD describes (nothing passes unchecked)."""
    schema = crd_schemas().get((doc["apiVersion"], doc["kind"]))
    if schema is None:
        validate_builtin(doc, version, strict=True)
        return
    validator = jsonschema.Draft202012Validator(schema, registry=object_meta_registry(version))
    validator.validate(doc)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(MANIFESTS)))
def test_every_manifest_validates_against_the_kubernetes_api_or_its_crd(path: Path, version: str):
    for doc in documents(path):
        validate(doc, version)


BREAKAGES = {
    "unknown field": ("DaemonSet", "ocrd", lambda d: d["spec"]["template"]["spec"].update(
        terminationGracePeriodSecond=180)),
    "wrong type": ("DaemonSet", "ocrd", lambda d: container(d, "ocrd")["readinessProbe"].update(
        periodSeconds="five")),
    "unknown field in a custom resource": ("InferencePool", "ocrd", lambda d: d["spec"].update(
        targetPort=8000)),
    "required field missing in a custom resource": ("InferencePool", "ocrd", lambda d: d["spec"].pop(
        "selector")),
    "bad value in a custom resource": ("HTTPRoute", "ocrd", lambda d: d["spec"]["rules"][0].update(
        timeouts={"request": "half an hour"})),
    "custom resource's metadata": ("InferenceObjective", "ocrd-bulk", lambda d: d["metadata"].update(
        lables={"a": "b"})),
}


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_a_broken_manifest_is_rejected(breakage: str):
    kind, name, mutate = BREAKAGES[breakage]
    doc = copy.deepcopy(find(kind, name))
    validate(doc, KUBERNETES_VERSIONS[0])  # whole, it passes
    mutate(doc)
    with pytest.raises(jsonschema.ValidationError):
        validate(doc, KUBERNETES_VERSIONS[0])


def test_a_kind_no_schema_describes_is_not_passed_silently():
    with pytest.raises(SchemaNotFoundError):
        validate({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}},
                 KUBERNETES_VERSIONS[0])


def test_vendored_crds_are_the_pinned_upstream_files_with_their_licence():
    for name, digest in CRD_DIGESTS.items():
        assert hashlib.sha256((CRDS / name).read_bytes()).hexdigest() == digest, name
        licence = (CRDS / name).parent / "LICENSE"
        assert "Apache License" in licence.read_text() and "Version 2.0" in licence.read_text()
    assert {str(p.relative_to(CRDS)) for p in CRDS.rglob("*.yaml")} == set(CRD_DIGESTS)


# --- kustomizations -------------------------------------------------------------------------


def kustomization_problems(listed: list[str], present: set[str]) -> list[str]:
    problems = [f"{name} is listed but missing" for name in listed if name not in present]
    problems += [f"{name} is an example with placeholders: never applied" for name in listed
                 if name.endswith(".example.yaml")]
    problems += [f"{name} is not listed" for name in sorted(present - set(listed))
                 if not name.endswith(".example.yaml")]
    return problems


def test_each_kustomization_lists_every_manifest_of_its_folder_but_the_examples():
    folders = {path.parent for path in manifest_files()}
    assert folders == {MANIFESTS, MANIFESTS / "vllm-router", MANIFESTS / "vllm-router-igw",
                       MANIFESTS / "gateway-api-inference-extension"}
    for folder in folders:
        kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
        assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
        assert kustomization["kind"] == "Kustomization"
        assert set(kustomization) <= {"apiVersion", "kind", "resources", "images"}
        present = {p.name for p in folder.glob("*.yaml") if p.name != "kustomization.yaml"}
        assert kustomization_problems(kustomization["resources"], present) == [], folder
        used = {c["image"].rsplit(":", 1)[0] for path in folder.glob("*.yaml") for doc in documents(path)
                if doc["kind"] in ("DaemonSet", "Deployment")
                for c in doc["spec"]["template"]["spec"]["containers"]
                + doc["spec"]["template"]["spec"].get("initContainers", [])}
        assert {image["name"] for image in kustomization.get("images", [])} == used, folder


def test_the_kustomization_check_finds_a_missing_an_unlisted_and_an_example_file():
    present = {"daemonset.yaml", "service.yaml", "secret.example.yaml"}
    assert kustomization_problems(["daemonset.yaml", "gone.yaml", "secret.example.yaml"], present) == [
        "gone.yaml is listed but missing",
        "secret.example.yaml is an example with placeholders: never applied",
        "service.yaml is not listed",
    ]


# --- ocrd's configuration -------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No OCRD_* variable of the test run's own may layer over the file."""
    for name in list(os.environ):
        if name.startswith("OCRD_"):
            monkeypatch.delenv(name)
    return monkeypatch


def configmap_toml(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "ocrd.toml"
    path.write_text(find("ConfigMap", "ocrd-config")["data"]["ocrd.toml"] + extra)
    return path


def example_secret(name: str, key: str) -> str:
    return find("Secret", name)["stringData"][key]


def settings_with_a_real_key(tmp_path: Path, env: pytest.MonkeyPatch) -> Settings:
    """The ConfigMap's file plus $OCRD_HTTP__API_KEYS shaped as secret.example.yaml's, with a
    real hash in place of the placeholder."""
    keys = json.loads(example_secret("ocrd-http-api-keys", "api_keys.json"))
    keys[0]["hash"] = hash_token(generate_token())
    env.setenv("OCRD_HTTP__API_KEYS", json.dumps(keys))
    return load_settings(configmap_toml(tmp_path))


def test_configmap_toml_loads_with_ocrds_settings_loader(tmp_path: Path, clean_env: pytest.MonkeyPatch):
    settings = settings_with_a_real_key(tmp_path, clean_env)
    assert (settings.http.host, settings.http.port) == ("0.0.0.0", 8000)
    assert settings.vllm.launcher == "process"
    assert settings.models["builtin/ppocr"].preload
    # The keys come from the environment, the rest of [http] from the file: both layers hold.
    assert [key.name for key in settings.http.api_keys] == ["my-app"]
    assert settings.grpc.listen == ["0.0.0.0:50051"] and settings.grpc.tokens_file is not None


def test_configmap_toml_with_a_key_ocrd_does_not_have_is_refused(tmp_path: Path, clean_env: pytest.MonkeyPatch):
    with pytest.raises(ConfigError, match="batches.concurency: unknown key"):
        load_settings(configmap_toml(tmp_path, "\n[batches]\nconcurency = 4\n"))


def test_example_secrets_placeholders_are_refused_and_their_shape_accepted(
        tmp_path: Path, clean_env: pytest.MonkeyPatch):
    clean_env.setenv("OCRD_HTTP__API_KEYS", example_secret("ocrd-http-api-keys", "api_keys.json"))
    with pytest.raises(ConfigError, match="http.api_keys.0.hash"):
        load_settings(configmap_toml(tmp_path))
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(example_secret("ocrd-grpc-tokens", "tokens.toml"))
    with pytest.raises(ConfigError, match="hash"):
        load_tokens_file(tokens)
    placeholder = example_secret("ocrd-grpc-tokens", "tokens.toml").split('hash = "')[1].split('"')[0]
    tokens.write_text(tokens.read_text().replace(placeholder, hash_token(generate_token())))
    assert [(t.name, t.role) for t in load_tokens_file(tokens)] == [("alice", "admin")]


def mounted(path: str, mounts: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next((m for m in mounts if Path(path).is_relative_to(m["mountPath"])), None)


def test_every_path_the_configuration_names_is_a_volume_of_the_pod(tmp_path: Path, clean_env: pytest.MonkeyPatch):
    settings = settings_with_a_real_key(tmp_path, clean_env)
    daemonset = find("DaemonSet", "ocrd")
    ocrd = container(daemonset, "ocrd")
    volumes = {v["name"]: v for v in daemonset["spec"]["template"]["spec"]["volumes"]}
    config_path = ocrd["args"][ocrd["args"].index("--config") + 1]
    expected = {  # path -> what backs it
        config_path: {"configMap": {"name": "ocrd-config"}},
        str(settings.grpc.tls_cert): {"secret": {"secretName": "ocrd-grpc-tls", "defaultMode": 0o440}},
        str(settings.grpc.tokens_file): {"secret": {"secretName": "ocrd-grpc-tokens", "defaultMode": 0o440}},
        str(settings.state_dir): {"hostPath": {"path": "/var/lib/ocrd/state", "type": "DirectoryOrCreate"}},
        str(settings.cache.hub_dir): {"hostPath": {"path": "/var/lib/ocrd/huggingface", "type": "DirectoryOrCreate"}},
        str(settings.runtime_dir): {"emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
        str(settings.grpc.socket): {"emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
    }
    for path, source in expected.items():
        mount = mounted(path, ocrd["volumeMounts"])
        assert mount is not None, f"{path} is on no volume"
        assert {k: v for k, v in volumes[mount["name"]].items() if k != "name"} == source, path
    assert Path(config_path).name in find("ConfigMap", "ocrd-config")["data"]
    env = {e["name"]: e for e in ocrd["env"]}
    assert unknown_env_variables({name: "" for name in env}) == []  # OCRD_HTTP_API_KEYS would be ignored
    assert env["OCRD_HTTP__API_KEYS"]["valueFrom"]["secretKeyRef"] == {
        "name": "ocrd-http-api-keys", "key": "api_keys.json"}
    assert env["OCRD_ADDRESS"]["value"] == str(settings.grpc.socket)
    # The init container hands the writable ones to ocrd's user before ocrd checks them: the
    # same volume at the same place, named in its script.
    init = daemonset["spec"]["template"]["spec"]["initContainers"][0]
    for path in (settings.state_dir, settings.runtime_dir, settings.cache.hub_dir):
        mount = mounted(str(path), ocrd["volumeMounts"])
        assert mount in init["volumeMounts"] and mount is not None and mount["mountPath"] in init["args"][0]


def grace_period_problem(grace_s: float, pre_stop_s: float, drain_s: float) -> str | None:
    # Beyond the drain: runners stop in parallel (5 s grace each, then SIGKILL), the control
    # plane (1 s) and the batch store close. 30 s covers those with room to spare.
    needed = pre_stop_s + drain_s + 30
    return None if grace_s >= needed else f"{grace_s} s of grace; ocrd may need {needed} s"


def test_termination_grace_covers_the_pre_stop_pause_and_ocrds_drain(
        tmp_path: Path, clean_env: pytest.MonkeyPatch):
    settings = settings_with_a_real_key(tmp_path, clean_env)
    spec = find("DaemonSet", "ocrd")["spec"]["template"]["spec"]
    pre_stop = container(find("DaemonSet", "ocrd"), "ocrd")["lifecycle"]["preStop"]["sleep"]["seconds"]
    problem = grace_period_problem(spec["terminationGracePeriodSeconds"], pre_stop,
                                   settings.scheduler.drain_timeout)
    assert problem is None
    assert grace_period_problem(spec["terminationGracePeriodSeconds"], pre_stop, 300) is not None


# --- probes ---------------------------------------------------------------------------------


def probe_app(settings: Settings, committed: list[Any]) -> Any:
    """ocrd's real app (routes, API-key middleware) over a FakeScheduler: no runner starts."""
    from ocrd.http.app import build_app

    class FakeScheduler:
        def models(self) -> list[Any]:
            return []

        def committed_models(self) -> list[Any]:
            return committed

    state = SimpleNamespace(settings=settings, version="test", scheduler=FakeScheduler(),
                            stopping=False, loaded_at_start=True)
    return build_app(state)


async def get(app: Any, path: str) -> int:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ocrd") as client:
        return (await client.get(path)).status_code


async def test_probes_use_paths_ocrd_serves_without_an_api_key(tmp_path: Path, clean_env: pytest.MonkeyPatch):
    settings = settings_with_a_real_key(tmp_path, clean_env)
    ocrd = container(find("DaemonSet", "ocrd"), "ocrd")
    probes = {kind: ocrd[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert probes["readinessProbe"]["path"] == "/health/ready"
    assert probes["livenessProbe"]["path"] == probes["startupProbe"]["path"] == "/health"
    http_port = next(p for p in ocrd["ports"] if p["name"] == "http")["containerPort"]
    assert {p["port"] for p in probes.values()} == {"http"} and http_port == settings.http.port
    app = probe_app(settings, committed=[])
    served = app.openapi()["paths"]  # ocrd's own document of its routes
    assert all("get" in served[probe["path"]] for probe in probes.values())
    for probe in probes.values():  # the kubelet sends no Authorization header
        assert await get(app, probe["path"]) == 200, probe
    assert await get(app, "/v1/models") == 401  # the keys are on: the probes' paths are open ones


async def test_a_preloaded_model_not_loaded_fails_readiness_but_not_liveness(
        tmp_path: Path, clean_env: pytest.MonkeyPatch):
    from ocrd.core.slots import Commitment

    settings = settings_with_a_real_key(tmp_path, clean_env)
    app = probe_app(settings, committed=[Commitment("builtin/ppocr", "loading", "")])
    assert await get(app, "/health/ready") == 503
    assert await get(app, "/health") == 200  # a slow load never gets the container restarted


# --- the objects around ocrd ----------------------------------------------------------------


def pod_labels() -> dict[str, str]:
    return find("DaemonSet", "ocrd")["spec"]["template"]["metadata"]["labels"]


def test_daemonset_asks_for_one_gpu_on_gpu_nodes_and_never_surges():
    daemonset = find("DaemonSet", "ocrd")
    spec = daemonset["spec"]["template"]["spec"]
    assert container(daemonset, "ocrd")["resources"]["limits"]["nvidia.com/gpu"] == 1
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"][0]["matchExpressions"][0]["key"] == "nvidia.com/gpu.present"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    # A surge pod would wait for the GPU the old pod holds.
    assert daemonset["spec"]["updateStrategy"]["rollingUpdate"]["maxSurge"] == 0
    # No Service variables in the OCRD_*/VLLM_* namespaces; a reaping PID 1 for vLLM's orphans.
    assert spec["enableServiceLinks"] is False and spec["shareProcessNamespace"] is True
    assert daemonset["spec"]["selector"]["matchLabels"].items() <= pod_labels().items()


def test_services_and_the_disruption_budget_select_the_ocrd_pods():
    ports = {p["name"] for p in container(find("DaemonSet", "ocrd"), "ocrd")["ports"]}
    for name in ("ocrd", "ocrd-nodes"):
        service = find("Service", name)
        assert service["spec"]["selector"].items() <= pod_labels().items()
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports
    assert find("Service", "ocrd-nodes")["spec"]["clusterIP"] == "None"
    budget = find("PodDisruptionBudget", "ocrd")["spec"]
    assert budget["selector"]["matchLabels"].items() <= pod_labels().items()
    # A DaemonSet has no scale subresource: only an integer minAvailable can be computed.
    assert isinstance(budget["minAvailable"], int) and "maxUnavailable" not in budget


def router_args(deployment: str = "vllm-router") -> list[str]:
    router = container(find("Deployment", deployment), "router")
    assert router["command"] == ["vllm-router"]
    return router["args"]


def test_vllm_router_args_parse_with_vllm_routers_own_parser():
    from vllm_router.launch_router import parse_router_args

    args = parse_router_args(router_args())
    args._validate_router_args()
    ocrd = container(find("DaemonSet", "ocrd"), "ocrd")
    assert args.service_discovery and not args.enable_igw
    assert args.selector == find("DaemonSet", "ocrd")["spec"]["selector"]["matchLabels"]
    assert args.service_discovery_port == next(p for p in ocrd["ports"] if p["name"] == "http")["containerPort"]
    assert args.service_discovery_namespace == find("DaemonSet", "ocrd")["metadata"]["namespace"]
    assert args.health_check_endpoint == ocrd["readinessProbe"]["httpGet"]["path"]
    router_port = next(p for p in container(find("Deployment", "vllm-router"), "router")["ports"]
                       if p["name"] == "http")["containerPort"]
    assert (args.host, args.port) == ("0.0.0.0", router_port)


@pytest.mark.parametrize("wrong", [["--no-such-flag"], ["--policy", "fastest"]])
def test_vllm_routers_parser_refuses_a_flag_it_does_not_have(wrong: list[str]):
    from vllm_router.launch_router import parse_router_args

    with pytest.raises(SystemExit):
        parse_router_args(router_args() + wrong)


def test_router_may_list_and_watch_the_pods_of_the_namespace_it_watches():
    deployment = find("Deployment", "vllm-router")
    rules = find("Role", "vllm-router")["rules"]
    assert any("pods" in r["resources"] and {"list", "watch"} <= set(r["verbs"]) for r in rules)
    binding = find("RoleBinding", "vllm-router")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "vllm-router"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "namespace": "ocrd",
                                    "name": deployment["spec"]["template"]["spec"]["serviceAccountName"]}]
    namespace = router_args()[router_args().index("--service-discovery-namespace") + 1]
    assert find("Role", "vllm-router")["metadata"]["namespace"] == namespace


def test_inference_pool_route_and_objective_point_at_the_ocrd_pods():
    pool = find("InferencePool", "ocrd")
    assert pool["spec"]["selector"]["matchLabels"] == find("DaemonSet", "ocrd")["spec"]["selector"]["matchLabels"]
    assert pool["spec"]["targetPorts"] == [{"number": 8000}]
    assert find("InferenceObjective", "ocrd-bulk")["spec"]["poolRef"]["name"] == "ocrd"
    rules = find("HTTPRoute", "ocrd")["spec"]["rules"]
    assert all(ref["kind"] == "InferencePool" and ref["name"] == "ocrd"
               for rule in rules for ref in rule["backendRefs"])
    routed = {match["path"]["value"] for rule in rules for match in rule["matches"]}
    # Files and batches live in the state_dir of one pod: a pool would scatter their requests.
    assert "/v1/chat/completions" in routed and not any(p.startswith(("/v1/files", "/v1/batches")) for p in routed)


def test_every_namespaced_object_is_in_the_ocrd_namespace():
    for path in manifest_files():
        for doc in documents(path):
            if doc["kind"] != "Namespace":
                assert doc["metadata"].get("namespace") == "ocrd", f"{path.name}: {doc['kind']}"


# --- vllm-router in igw mode, the nodes registering themselves ([cluster]) -----------------------


CLUSTER_LINES = ('    # [cluster]\n', '    # router_url = "http://vllm-router-igw.ocrd.svc:8000"\n')


def test_igw_router_args_parse_and_it_runs_alone_without_discovery():
    from vllm_router.launch_router import parse_router_args

    args = parse_router_args(router_args("vllm-router-igw"))
    args._validate_router_args()
    assert args.enable_igw and not args.service_discovery
    deployment = find("Deployment", "vllm-router-igw")
    # The nodes register through the Service: a second replica would know only some of them.
    assert deployment["spec"]["replicas"] == 1
    port = next(p for p in container(deployment, "router")["ports"] if p["name"] == "http")["containerPort"]
    assert (args.host, args.port) == ("0.0.0.0", port)
    with pytest.raises(SystemExit):
        parse_router_args(router_args("vllm-router-igw") + ["--enable-igw-mode"])


def test_the_configmaps_cluster_lines_name_the_igw_routers_service_and_load(
        tmp_path: Path, clean_env: pytest.MonkeyPatch):
    text = find("ConfigMap", "ocrd-config")["data"]["ocrd.toml"]
    assert all(line.strip() in text for line in CLUSTER_LINES), "the commented [cluster] lines moved"
    uncommented = text.replace("# [cluster]", "[cluster]").replace("# router_url", "router_url")
    path = tmp_path / "ocrd.toml"
    path.write_text(uncommented)
    clean_env.setenv("OCRD_CLUSTER__ADVERTISE_URL", "http://10.1.2.3:8000")  # as the pod's env makes it
    cluster = load_settings(path).cluster
    router = httpx.URL(cluster.router_url)
    service = find("Service", "vllm-router-igw")
    assert router.host == f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc"
    assert router.port == service["spec"]["ports"][0]["port"]
    assert cluster.advertise_url.rstrip("/") == "http://10.1.2.3:8000"


def test_the_advertise_url_is_the_pods_ip_and_ocrds_port():
    ocrd = container(find("DaemonSet", "ocrd"), "ocrd")
    env = {item["name"]: item for item in ocrd["env"]}
    names = [item["name"] for item in ocrd["env"]]
    assert env["POD_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    # $(POD_IP) is expanded only from variables defined before it.
    assert names.index("POD_IP") < names.index("OCRD_CLUSTER__ADVERTISE_URL")
    port = next(p for p in ocrd["ports"] if p["name"] == "http")["containerPort"]
    assert env["OCRD_CLUSTER__ADVERTISE_URL"]["value"] == f"http://$(POD_IP):{port}"
