"""The deployment files: Kustomize renders, strict schemas, cross-references, policy, lint.

Every tool runs from the virtualenv, where pyproject.toml's dev extra installs it with
its schemas inside the wheel, so these checks need no network and no kubectl on PATH.
Each check is also run against a fixture broken in the one way it exists to catch.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import importlib
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import kubernetes_validate
import pytest
import yaml

from support import deploy_checks as checks
from support import deploy_wiring as wiring
from support.deploy_checks import Doc

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
FIXTURES = ROOT / "tests" / "fixtures" / "deploy"
BIN = Path(sys.executable).parent
# The oldest Kubernetes the manifests claim (native gRPC probes are GA since 1.27) and the
# newest whose schemas the pinned kubernetes-validate bundles.
KUBERNETES_VERSIONS = ("1.33.0", "1.37.0")
EXAMPLES = ("sidecar", "sidecar-tls", "lake")
# Stand-ins for the files the examples' secretGenerators read, which users create and git
# ignores; Kustomize only needs them to exist.
GENERATED_FILES = {"sidecar": ("token",), "sidecar-tls": ("tls.crt", "tls.key", "ca.crt"),
                   "lake": ("catalog-password", "s3-secret-key")}
DEMO_PATHS = frozenset({"/healthz", "/v1/info", "/v1/predict"})
# MinIO's health endpoints (the example's S3-compatible store for the lake)
MINIO_PATHS = frozenset({"/minio/health/live", "/minio/health/ready"})
COMPOSE_FILES = ("compose.yaml", "compose.lake.yaml")


def _run(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=60)


def _load_all(text: str) -> list[Doc]:
    return [d for d in yaml.safe_load_all(text) if d]


@pytest.fixture(scope="module")
def k8s_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tree = tmp_path_factory.mktemp("deploy") / "k8s"
    shutil.copytree(DEPLOY / "k8s", tree)
    for example, names in GENERATED_FILES.items():
        for name in names:
            (tree / "examples" / example / name).write_text(f"not-a-real-{name}\n")
    return tree


def _render(tree: Path, path: str) -> list[Doc]:
    done = _run(BIN / "kubectl", "kustomize", tree / path)
    assert done.returncode == 0, f"kubectl kustomize {path} failed:\n{done.stderr}"
    return _load_all(done.stdout)


@pytest.fixture(scope="module")
def rendered(k8s_tree: Path) -> dict[str, list[Doc]]:
    return {example: _render(k8s_tree, f"examples/{example}") for example in EXAMPLES}


@pytest.fixture(scope="module")
def served_paths() -> dict[str, frozenset[str]]:
    """The HTTP paths each image answers; the collector's read from its real router."""
    from pyrometer.collector.api.app import create_app
    from pyrometer.collector.metrics import CollectorMetrics
    from pyrometer.collector.storage.store import Store

    app = create_app(cast(Store, object()), CollectorMetrics())  # routes only; never queried
    collector = frozenset(r.canonical for r in app.router.resources())
    # the agent's proxy port forwards every path to the model server
    return {"pyrometer-collector": collector, "pyrometer-demo-model": DEMO_PATHS,
            "pyrometer-agent": DEMO_PATHS, "minio": MINIO_PATHS}


def test_the_demo_server_serves_the_paths_probes_may_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(DEPLOY / "demo"))
    from server_app import ModelServerApp, ServerConfig

    app = ModelServerApp(ServerConfig())
    for path in sorted(DEMO_PATHS - {"/v1/predict"}):  # a POST: the demo server's own tests
        statuses: list[str] = []
        app({"REQUEST_METHOD": "GET", "PATH_INFO": path}, lambda s, h, out=statuses: out.append(s))
        assert statuses == ["200 OK"], f"GET {path} on the demo server: {statuses}"


COMMON_PARTS = {"Deployment/demo-model", "Deployment/pyrometer-collector", "Service/demo-model",
                "Service/pyrometer-collector", "Secret/pyrometer-token"}
EMBEDDED_PARTS = {"PersistentVolumeClaim/pyrometer-collector-data"}
LAKE_PARTS = {"StatefulSet/pyrometer-lake-catalog", "Service/pyrometer-lake-catalog",
              "StatefulSet/pyrometer-lake-s3", "Service/pyrometer-lake-s3", "Job/pyrometer-lake-bucket",
              "ConfigMap/pyrometer-lake", "Secret/pyrometer-lake-catalog", "Secret/pyrometer-lake-s3",
              "PodDisruptionBudget/pyrometer-collector"}


def _named(d: Doc) -> str:  # a generated Secret's or ConfigMap's name ends in a hash of its content
    name = d["metadata"]["name"]
    return f"{d['kind']}/{name.rsplit('-', 1)[0] if d['kind'] in ('Secret', 'ConfigMap') else name}"


@pytest.mark.parametrize("example", EXAMPLES)
def test_examples_render_every_part(rendered: dict[str, list[Doc]], example: str) -> None:
    kinds = {_named(d) for d in rendered[example]}
    expected, absent = ((COMMON_PARTS | LAKE_PARTS, EMBEDDED_PARTS) if example == "lake"
                        else (COMMON_PARTS | EMBEDDED_PARTS, LAKE_PARTS))
    assert expected <= kinds, f"{example} renders {sorted(kinds)}, without {sorted(expected - kinds)}"
    assert not absent & kinds, f"{example} renders {sorted(absent & kinds)}"


def test_the_lake_runs_many_collectors_behind_the_one_service(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["lake"]
    assert _workload(docs, "Deployment", "pyrometer-collector")["spec"]["replicas"] == 3
    services = [d for d in docs if d["kind"] == "Service" and "pyrometer-collector" in d["metadata"]["name"]]
    assert services == [_service(rendered["sidecar"], "pyrometer-collector")], \
        "agents must keep dialing the one Service"
    # the same probes as the one embedded collector
    lake, embedded = _collector(docs), _collector(rendered["sidecar"])
    assert (lake["readinessProbe"], lake["livenessProbe"]) == (
        embedded["readinessProbe"], embedded["livenessProbe"])


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("example", EXAMPLES)
def test_manifests_validate_strictly(rendered: dict[str, list[Doc]], example: str, version: str) -> None:
    for doc in rendered[example]:
        kubernetes_validate.validate(doc, version, strict=True)


def test_strict_validation_rejects_a_misspelled_field() -> None:
    (doc,) = _load_all((FIXTURES / "broken-misspelled-field.yaml").read_text())
    with pytest.raises(kubernetes_validate.ValidationError, match="readOnlyRootFileSystem"):
        kubernetes_validate.validate(doc, KUBERNETES_VERSIONS[0], strict=True)


def test_the_old_target_port_bug_passes_schemas_and_fails_the_cross_reference() -> None:
    docs = _load_all((FIXTURES / "broken-sidecar-target-port.yaml").read_text())
    for doc in docs:  # the reason schema checks alone are not enough
        kubernetes_validate.validate(doc, KUBERNETES_VERSIONS[0], strict=True)
    assert checks.service_target_ports(docs) == [
        "Service/pyrometer-collector port http: targetPort 'proxy' is no container port of "
        "Deployment/pyrometer-collector"]


def _all_problems(docs: list[Doc], served: dict[str, frozenset[str]]) -> list[str]:
    return [*checks.service_target_ports(docs), *checks.volume_mounts(docs),
            *checks.references_exist(docs), *checks.probes_served(docs, served),
            *checks.policy(docs), *checks.collector_storage(docs)]


@pytest.mark.parametrize("example", EXAMPLES)
def test_cross_references_and_policy_hold(rendered: dict[str, list[Doc]], example: str,
                                          served_paths: dict[str, frozenset[str]]) -> None:
    assert _all_problems(rendered[example], served_paths) == []


def test_the_base_leaves_only_the_token_secret_to_the_overlay(k8s_tree: Path) -> None:
    docs = _render(k8s_tree, "base/collector")
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSIONS[0], strict=True)
    assert checks.references_exist(docs) == [
        "Deployment/pyrometer-collector: Secret 'pyrometer-token' is not in the manifests"]


def test_the_lake_component_leaves_only_where_the_lake_is_to_the_overlay(k8s_tree: Path) -> None:
    overlay = k8s_tree / "examples" / "bare-lake"
    overlay.mkdir(exist_ok=True)
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": ["../../base/collector"], "components": ["../../components/collector-lake"]}))
    docs = _render(k8s_tree, "examples/bare-lake")
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSIONS[0], strict=True)
    assert sorted(_named(d) for d in docs) == [
        "Deployment/pyrometer-collector", "PodDisruptionBudget/pyrometer-collector",
        "Service/pyrometer-collector"]
    where = "Deployment/pyrometer-collector: "
    assert checks.references_exist(docs) == [
        where + "Secret 'pyrometer-token' is not in the manifests",
        *(where + f"ConfigMap 'pyrometer-lake' key {k!r} is not in the manifests"
          for k in ("catalog", "data-path")),
        where + "Secret 'pyrometer-lake-catalog' key 'password' is not in the manifests",
        *(where + f"Secret 'pyrometer-lake-s3' key {k!r} is not in the manifests"
          for k in ("access-key-id", "secret-access-key")),
        where + "ConfigMap 'pyrometer-lake' key 's3-region' is not in the manifests"]


def _container(docs: list[Doc], workload: str, name: str, kind: str = "Deployment") -> Doc:
    pod = next(p for p in checks.pods(docs) if p.where == f"{kind}/{workload}")
    return next(c for c in pod.spec["containers"] if c["name"] == name)


def _pod_spec(docs: list[Doc], workload: str) -> Doc:
    return next(p.spec for p in checks.pods(docs) if p.where == f"Deployment/{workload}")


def _agent(docs: list[Doc]) -> Doc:
    return _container(docs, "demo-model", "pyrometer-agent")


def _collector(docs: list[Doc]) -> Doc:
    return _container(docs, "pyrometer-collector", "collector")


def _set(path: list[Any], value: Any) -> Callable[[Doc], None]:
    def apply(target: Doc) -> None:
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return apply


def _service(docs: list[Doc], name: str) -> Doc:
    return next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == name)


def _workload(docs: list[Doc], kind: str, name: str) -> Doc:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def _generated(docs: list[Doc], kind: str, name: str) -> Doc:
    """A ConfigMap or Secret a generator made (its name carries a hash)."""
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"].rsplit("-", 1)[0] == name)


# (id, how the good manifests are broken, the check that must notice, what it must say)
BREAKS: list[tuple[str, Callable[[list[Doc]], None], str, str]] = [
    ("selector-matches-nothing",
     lambda d: _set(["spec", "selector"], {"app.kubernetes.io/name": "collectr"})(
         _service(d, "pyrometer-collector")), "target_ports", "matches no pod template"),
    ("target-port-typo",
     lambda d: _set(["spec", "ports", 0, "targetPort"], "grcp")(_service(d, "pyrometer-collector")),
     "target_ports", "targetPort 'grcp'"),
    ("mount-without-volume",
     lambda d: _set(["volumeMounts", 0, "name"], "dta")(_collector(d)), "mounts", "'dta' has no volume"),
    ("secret-name-typo",
     lambda d: _set(["volumes", 3, "secret", "secretName"], "pyrometer-tokn")(_pod_spec(d, "demo-model")),
     "references", "Secret 'pyrometer-tokn'"),
    ("claim-name-typo",
     lambda d: _set(["volumes", 0, "persistentVolumeClaim", "claimName"], "data")(
         _pod_spec(d, "pyrometer-collector")), "references", "PersistentVolumeClaim 'data'"),
    ("probe-path-not-served",
     lambda d: _set(["readinessProbe", "httpGet", "path"], "/health")(_collector(d)),
     "probes", "does not serve /health"),
    ("grpc-probe-port-not-declared",
     lambda d: _set(["livenessProbe", "grpc", "port"], 7072)(_collector(d)),
     "probes", "port 7072 is not declared"),
    ("container-port-not-listened-on",
     lambda d: _set(["args", 2], "--http-listen=0.0.0.0:8071")(_collector(d)),
     "probes", "7071 is not one its flags listen on"),
    ("agent-extra-capability",
     lambda d: _set(["securityContext", "capabilities", "add"], ["SYS_PTRACE", "SYS_ADMIN"])(_agent(d)),
     "policy", "not exactly drop [ALL] add [SYS_PTRACE]"),
    ("agent-non-root", lambda d: _set(["securityContext", "runAsUser"], 10001)(_agent(d)),
     "policy", "SYS_PTRACE would not be effective"),
    ("agent-privileged", lambda d: _set(["securityContext", "privileged"], True)(_agent(d)),
     "policy", "privileged"),
    ("host-pid", lambda d: _set(["hostPID"], True)(_pod_spec(d, "demo-model")), "policy", "hostPID is set"),
    ("no-shared-process-namespace",
     lambda d: _set(["shareProcessNamespace"], False)(_pod_spec(d, "demo-model")),
     "policy", "shareProcessNamespace is not true"),
    ("writable-root",
     lambda d: _set(["securityContext", "readOnlyRootFilesystem"], False)(_collector(d)),
     "policy", "root filesystem is writable"),
    ("privilege-escalation",
     lambda d: _set(["securityContext", "allowPrivilegeEscalation"], True)(_agent(d)),
     "policy", "allowPrivilegeEscalation is not false"),
    ("no-cpu-limit", lambda d: _set(["resources", "limits"], {"memory": "1Gi"})(_collector(d)),
     "policy", "no cpu limit"),
    ("collector-as-root",
     lambda d: _set(["securityContext", "runAsUser"], 0)(_pod_spec(d, "pyrometer-collector")),
     "policy", "container collector: may run as root"),
    ("spool-not-on-empty-dir", lambda d: _set(["args", 3], "--spool-dir=/var/spool/other")(_agent(d)),
     "policy", "--spool-dir /var/spool/other is not an emptyDir mount"),
    ("db-off-the-volume", lambda d: _set(["args", 0], "--db=/tmp/pyrometer.duckdb")(_collector(d)),
     "collector_storage", "--db /tmp/pyrometer.duckdb is not on a PersistentVolumeClaim mount"),
    ("embedded-collectors-replicated",
     lambda d: _set(["spec", "replicas"], 3)(_workload(d, "Deployment", "pyrometer-collector")),
     "collector_storage", "3 replicas of a --db collector"),
    ("embedded-collector-rolled",
     lambda d: _set(["spec", "strategy"], {"type": "RollingUpdate"})(
         _workload(d, "Deployment", "pyrometer-collector")),
     "collector_storage", "strategy is not Recreate"),
]


@pytest.mark.parametrize(("name", "breaks", "check", "says"), BREAKS, ids=[b[0] for b in BREAKS])
def test_each_check_catches_what_it_is_for(
        rendered: dict[str, list[Doc]], served_paths: dict[str, frozenset[str]],
        name: str, breaks: Callable[[list[Doc]], None], check: str, says: str) -> None:
    docs = copy.deepcopy(rendered["sidecar"])
    breaks(docs)
    run: dict[str, Callable[[list[Doc]], list[str]]] = {
        "target_ports": checks.service_target_ports, "mounts": checks.volume_mounts,
        "references": checks.references_exist, "policy": checks.policy,
        "probes": lambda d: checks.probes_served(d, served_paths),
        "collector_storage": checks.collector_storage}
    problems = run[check](docs)
    assert any(says in p for p in problems), f"{name}: {check} did not say {says!r}: {problems}"


def _lake_problems(docs: list[Doc]) -> list[str]:
    return wiring.lake_wiring(wiring.k8s_parts(docs), wiring.k8s_finder(docs))


def test_the_lake_parts_reach_each_other(rendered: dict[str, list[Doc]]) -> None:
    assert _lake_problems(rendered["lake"]) == []
    assert _lake_problems(rendered["sidecar"]) == ["no collector runs with --lake"]


def _lake_setting(key: str, value: str) -> Callable[[list[Doc]], None]:
    return lambda d: _set(["data", key], value)(_generated(d, "ConfigMap", "pyrometer-lake"))


def _catalog_env(index: int, value: Doc) -> Callable[[list[Doc]], None]:
    return lambda d: _set(["env", index], value)(
        _container(d, "pyrometer-lake-catalog", "postgres", "StatefulSet"))


# (id, how the good lake example is broken, the check that must notice, what it must say)
LAKE_BREAKS: list[tuple[str, Callable[[list[Doc]], None], str, str]] = [
    ("catalog-host-typo", _lake_setting("catalog", "postgres://pyrometer@pyrometer-lake-catalg:5432/pyrometer"),
     "wiring", "catalog pyrometer-lake-catalg:5432: no Service of that name"),
    ("catalog-port", _lake_setting("catalog", "postgres://pyrometer@pyrometer-lake-catalog:5433/pyrometer"),
     "wiring", "Service/pyrometer-lake-catalog has no port 5433"),
    ("catalog-database", _lake_setting("catalog", "postgres://pyrometer@pyrometer-lake-catalog/lake"),
     "wiring", "has POSTGRES_DB 'pyrometer'"),
    ("password-in-the-url",
     _lake_setting("catalog", "postgres://pyrometer:hunter2@pyrometer-lake-catalog:5432/pyrometer"),
     "wiring", "the catalog URL holds its password"),
    ("catalog-password-not-the-collectors'", _catalog_env(2, {"name": "POSTGRES_PASSWORD", "value": "x"}),
     "wiring", "PGPASSWORD <Secret pyrometer-lake-catalog-"),
    ("s3-endpoint-port", _lake_setting("s3-endpoint", "http://pyrometer-lake-s3:9001"),
     "wiring", "Service/pyrometer-lake-s3 has no port 9001"),
    ("s3-keys-not-minio's",
     lambda d: _set(["env", 0, "valueFrom", "secretKeyRef", "key"], "secret-access-key")(
         _container(d, "pyrometer-lake-s3", "minio", "StatefulSet")),
     "wiring", "are not StatefulSet/pyrometer-lake-s3 container minio's MINIO_ROOT_USER"),
    ("bucket-nobody-makes", _lake_setting("data-path", "s3://pyrometer-profiles/lake"),
     "wiring", "nothing makes the bucket 'pyrometer-profiles'"),
    ("bucket-made-elsewhere",
     lambda d: _set(["env", 2, "value"], "http://$(ACCESS_KEY):$(SECRET_KEY)@minio:9000")(
         _container(d, "pyrometer-lake-bucket", "make-bucket", "Job")),
     "wiring", "is not pyrometer-lake-s3:9000 with the collectors' keys"),
    ("lake-on-a-local-folder", _lake_setting("data-path", "/data/lake"),
     "collector_storage", "--data-path /data/lake is not s3://"),
    ("lake-collector-on-a-claim",
     lambda d: (_pod_spec(d, "pyrometer-collector")["volumes"].append(
         {"name": "data", "persistentVolumeClaim": {"claimName": "pyrometer-collector-data"}}),
         _collector(d)["volumeMounts"].append({"name": "data", "mountPath": "/data"})),
     "collector_storage", "a --lake collector mounts a PersistentVolumeClaim"),
]


@pytest.mark.parametrize(("name", "breaks", "check", "says"), LAKE_BREAKS, ids=[b[0] for b in LAKE_BREAKS])
def test_each_lake_check_catches_what_it_is_for(
        rendered: dict[str, list[Doc]], name: str, breaks: Callable[[list[Doc]], None],
        check: str, says: str) -> None:
    docs = copy.deepcopy(rendered["lake"])
    breaks(docs)
    problems = {"wiring": _lake_problems, "collector_storage": checks.collector_storage}[check](docs)
    assert any(says in p for p in problems), f"{name}: {check} did not say {says!r}: {problems}"


def _check_compose(path: Path) -> subprocess.CompletedProcess[str]:
    # the compose-spec schema vendored in the pinned check-jsonschema wheel (offline)
    return _run(BIN / "check-jsonschema", "--builtin-schema", "vendor.compose-spec", path)


def _compose(name: str) -> Doc:
    loaded: Doc = yaml.safe_load((DEPLOY / name).read_text())
    return loaded


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_compose_file_validates_and_holds_the_agent_policy(name: str) -> None:
    done = _check_compose(DEPLOY / name)
    assert done.returncode == 0, f"{name}:\n{done.stdout}{done.stderr}"
    assert checks.compose_policy(_compose(name)) == []


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_compose_services_wait_for_what_they_reach(name: str) -> None:
    assert wiring.compose_dependencies(_compose(name)) == []


def test_compose_lake_parts_reach_each_other() -> None:
    compose = _compose("compose.lake.yaml")
    assert wiring.lake_wiring(wiring.compose_parts(compose), wiring.compose_finder(compose)) == []
    assert compose["services"]["collector"]["deploy"]["replicas"] == 3


def _compose_set(service: str, path: list[Any], value: Any) -> Callable[[Doc], None]:
    return lambda c: _set(path, value)(c["services"][service])


# (id, how compose.lake.yaml is broken, the check that must notice, what it must say)
COMPOSE_BREAKS: list[tuple[str, Callable[[Doc], None], str, str]] = [
    ("replicas-on-one-host-port", _compose_set("collector", ["ports"], ["127.0.0.1:7071:7071"]),
     "dependencies", "3 replicas and host port 7071 for 1"),
    ("collector-does-not-wait-for-the-bucket",
     lambda c: c["services"]["collector"]["depends_on"].pop("bucket"),
     "dependencies", "collector: reaches bucket but does not wait for it (service_completed_successfully)"),
    ("wait-for-health-never-checked", lambda c: c["services"]["catalog"].pop("healthcheck"),
     "dependencies", "waits for catalog to be healthy, and catalog has no healthcheck"),
    ("agent-dials-no-service",
     _compose_set("agent", ["environment", "PYROMETER_COLLECTOR"], "collectors:7070"),
     "dependencies", "agent: reaches collectors but does not wait for it"),
    ("bucket-maker-with-other-keys",
     _compose_set("bucket", ["environment", "MC_HOST_lake"], "http://pyrometer:minioadmin@s3:9000"),
     "wiring", "bucket: mc's alias 'lake' (http://pyrometer:minioadmin@s3:9000) is not s3:9000"),
    ("catalog-password-drifted", _compose_set("catalog", ["environment", "POSTGRES_PASSWORD"], "other"),
     "wiring", "collector: PGPASSWORD pyrometer-lake-catalog-demo is not catalog's POSTGRES_PASSWORD"),
]


@pytest.mark.parametrize(("name", "breaks", "check", "says"), COMPOSE_BREAKS,
                         ids=[b[0] for b in COMPOSE_BREAKS])
def test_each_compose_check_catches_what_it_is_for(
        name: str, breaks: Callable[[Doc], None], check: str, says: str) -> None:
    compose = _compose("compose.lake.yaml")
    breaks(compose)
    problems = (wiring.compose_dependencies(compose) if check == "dependencies" else
                wiring.lake_wiring(wiring.compose_parts(compose), wiring.compose_finder(compose)))
    assert any(says in p for p in problems), f"{name}: {check} did not say {says!r}: {problems}"


def test_compose_schema_rejects_a_misspelled_field() -> None:
    done = _check_compose(FIXTURES / "broken-compose.yaml")
    assert done.returncode == 1 and "cap_adds" in done.stdout, done.stdout + done.stderr


def test_compose_policy_catches_an_extra_capability() -> None:
    compose = _compose("compose.yaml")
    compose["services"]["agent"]["cap_add"].append("NET_ADMIN")
    del compose["services"]["model"]["read_only"]
    assert checks.compose_policy(compose) == [
        "agent: cap_drop ['ALL'] cap_add ['SYS_PTRACE', 'NET_ADMIN'], not exactly ALL and SYS_PTRACE",
        "model: the root filesystem is writable"]


@pytest.mark.parametrize("dockerfile", sorted(p.name for p in DEPLOY.glob("Dockerfile.*")
                                              if not p.name.endswith(".dockerignore")))
def test_dockerfiles_lint_clean(dockerfile: str) -> None:
    # every rule left ignored is ignored inline, next to the comment that says why
    done = _run(BIN / "hadolint", "--no-color", DEPLOY / dockerfile)
    assert done.returncode == 0, f"hadolint {dockerfile}:\n{done.stdout}{done.stderr}"


def test_hadolint_flags_a_bad_dockerfile() -> None:
    done = _run(BIN / "hadolint", "--no-color", FIXTURES / "broken.Dockerfile")
    assert done.returncode == 1 and "DL3008" in done.stdout and "DL3002" in done.stdout, done.stdout


def _parser(command: str) -> argparse.ArgumentParser:
    module = {"agent": "pyrometer.agent.config", "collector": "pyrometer.collector.config"}[command]
    parser = argparse.ArgumentParser(prog=f"pyrometer {command}", exit_on_error=False)
    importlib.import_module(module).add_arguments(parser)
    return parser


@dataclasses.dataclass(frozen=True)
class Run:
    """One agent or collector the deployment files start."""

    where: str
    command: str  # "agent" or "collector"
    image: str
    argv: list[str]
    variables: list[str]


def _runs(docs: list[Doc], compose: Doc, where: str) -> list[Run]:
    commands = {"pyrometer-agent": "agent", "pyrometer-collector": "collector"}
    runs = []
    for pod in checks.pods(docs):
        for c in checks.containers(pod):
            if command := commands.get(checks.image_name(c)):
                runs.append(Run(f"{where} {pod.where}", command, c["image"], c.get("args", []),
                                [e["name"] for e in c.get("env", [])]))
    for name, svc in compose["services"].items():
        if command := commands.get(checks.image_name(svc)):
            runs.append(Run(f"{where} {name}", command, svc["image"], svc.get("command", []),
                            list(svc.get("environment", {}))))
    return runs


# the S3 settings the lake reads (its module docstring names each), and libpq's password
LAKE_VARIABLES = frozenset(re.findall(r"AWS_[A-Z0-9_]+", (ROOT / "collector/storage/lake/s3.py").read_text())
                           ) | {"PGPASSWORD"}


@pytest.fixture(scope="module")
def runs(rendered: dict[str, list[Doc]]) -> list[Run]:
    found = [*_runs(rendered["sidecar-tls"], _compose("compose.yaml"), "sidecar-tls, compose.yaml:"),
             *_runs(rendered["lake"], _compose("compose.lake.yaml"), "lake, compose.lake.yaml:")]
    assert sorted({(r.command, r.where.split(":")[0]) for r in found}) == [
        ("agent", "lake, compose.lake.yaml"), ("agent", "sidecar-tls, compose.yaml"),
        ("collector", "lake, compose.lake.yaml"), ("collector", "sidecar-tls, compose.yaml")]
    return found


def test_every_flag_and_variable_is_one_the_commands_take(runs: list[Run]) -> None:
    for run in runs:
        parser = _parser(run.command)
        try:
            parser.parse_args(run.argv)  # an unknown or misspelled flag raises
        except (argparse.ArgumentError, SystemExit) as exc:
            pytest.fail(f"{run.where} pyrometer {run.command} {run.argv}: {exc}")
        known = set(re.findall(r"PYROMETER_[A-Z_]+", parser.format_help()))
        if run.command == "collector" and "--lake" in " ".join(run.argv):
            known |= LAKE_VARIABLES
        unknown = {n for n in run.variables if n.startswith(("PYROMETER_", "AWS_", "PG"))} - known
        assert not unknown, f"{run.where}: pyrometer {run.command} reads no {sorted(unknown)}"


def test_each_collector_runs_the_image_of_its_backend(runs: list[Run]) -> None:
    # the two extras pin different DuckDB releases: a --lake collector started from the
    # embedded image stops at start-up, asking for pyrometer[lake]
    for run in runs:
        if run.command == "collector":
            lake = "--lake" in " ".join(run.argv)
            assert run.image.endswith("-lake") == lake, f"{run.where}: {run.image} for {run.argv}"
    build = _compose("compose.lake.yaml")["services"]["collector"]["build"]
    assert build["target"] == "lake"
    stages = re.findall(r"^FROM \S+ AS (\S+)\n(?:(?!FROM).*\n)*?RUN pip install [^\n]*'/src\[(\w+)\]'",
                        (DEPLOY / "Dockerfile.collector").read_text(), re.MULTILINE)
    assert stages == [("lake", "lake"), ("embedded", "collector")], \
        "the lake target installs [lake], and the default (last) target is the embedded one"


def test_a_misspelled_flag_or_variable_is_caught() -> None:
    parser = _parser("agent")
    with pytest.raises(SystemExit):
        parser.parse_args(["--spool-dirr=/var/spool/pyrometer"])
    assert "PYROMETER_TOKEN_FILES" not in set(re.findall(r"PYROMETER_[A-Z_]+", parser.format_help()))
    assert "AWS_ENDPOINT_URL_S3" in LAKE_VARIABLES and "AWS_S3_ENDPOINT" not in LAKE_VARIABLES
