"""The deployment files: Kustomize renders, strict schemas, cross-references, policy, lint.

Every tool runs from the virtualenv, where pyproject.toml's dev extra installs it with
its schemas inside the wheel, so these checks need no network and no kubectl on PATH.
Each check is also run against a fixture broken in the one way it exists to catch.
"""

from __future__ import annotations

import argparse
import copy
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
from support.deploy_checks import Doc

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
FIXTURES = ROOT / "tests" / "fixtures" / "deploy"
BIN = Path(sys.executable).parent
# The oldest Kubernetes the manifests claim (native gRPC probes are GA since 1.27) and the
# newest whose schemas the pinned kubernetes-validate bundles.
KUBERNETES_VERSIONS = ("1.33.0", "1.37.0")
EXAMPLES = ("sidecar", "sidecar-tls")
# Stand-ins for the files the examples' secretGenerators read, which users create and git
# ignores; Kustomize only needs them to exist.
GENERATED_FILES = {"sidecar": ("token",), "sidecar-tls": ("tls.crt", "tls.key", "ca.crt")}
DEMO_PATHS = frozenset({"/healthz", "/v1/info", "/v1/predict"})


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
            "pyrometer-agent": DEMO_PATHS}


def test_the_demo_server_serves_the_paths_probes_may_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(DEPLOY / "demo"))
    from server_app import ModelServerApp, ServerConfig

    app = ModelServerApp(ServerConfig())
    for path in sorted(DEMO_PATHS - {"/v1/predict"}):  # a POST: the demo server's own tests
        statuses: list[str] = []
        app({"REQUEST_METHOD": "GET", "PATH_INFO": path}, lambda s, h, out=statuses: out.append(s))
        assert statuses == ["200 OK"], f"GET {path} on the demo server: {statuses}"


@pytest.mark.parametrize("example", EXAMPLES)
def test_examples_render_every_part(rendered: dict[str, list[Doc]], example: str) -> None:
    def named(d: Doc) -> str:  # a generated Secret's name ends in a hash of its content
        name = d["metadata"]["name"]
        return f"{d['kind']}/{name.rsplit('-', 1)[0] if d['kind'] == 'Secret' else name}"

    kinds = sorted(named(d) for d in rendered[example])
    expected = {"Deployment/demo-model", "Deployment/pyrometer-collector", "Service/demo-model",
                "Service/pyrometer-collector", "PersistentVolumeClaim/pyrometer-collector-data",
                "Secret/pyrometer-token"}
    assert expected <= set(kinds), f"{example} renders {kinds}"


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
            *checks.policy(docs), *checks.collector_volume(docs)]


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


def _container(docs: list[Doc], workload: str, name: str) -> Doc:
    pod = next(p for p in checks.pods(docs) if p.where == f"Deployment/{workload}")
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
     "collector_volume", "--db /tmp/pyrometer.duckdb is not on a PersistentVolumeClaim mount"),
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
        "collector_volume": checks.collector_volume}
    problems = run[check](docs)
    assert any(says in p for p in problems), f"{name}: {check} did not say {says!r}: {problems}"


def _check_compose(path: Path) -> subprocess.CompletedProcess[str]:
    # the compose-spec schema vendored in the pinned check-jsonschema wheel (offline)
    return _run(BIN / "check-jsonschema", "--builtin-schema", "vendor.compose-spec", path)


def test_compose_file_validates_and_holds_the_agent_policy() -> None:
    done = _check_compose(DEPLOY / "compose.yaml")
    assert done.returncode == 0, f"compose.yaml:\n{done.stdout}{done.stderr}"
    assert checks.compose_policy(yaml.safe_load((DEPLOY / "compose.yaml").read_text())) == []


def test_compose_schema_rejects_a_misspelled_field() -> None:
    done = _check_compose(FIXTURES / "broken-compose.yaml")
    assert done.returncode == 1 and "cap_adds" in done.stdout, done.stdout + done.stderr


def test_compose_policy_catches_an_extra_capability() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
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


def _flags_and_variables(docs: list[Doc], compose: Doc) -> list[tuple[str, list[str], list[str]]]:
    """(command, argv, PYROMETER_* names) of every agent and collector the files run."""
    runs = []
    for pod in checks.pods(docs):
        for c in checks.containers(pod):
            command = {"pyrometer-agent": "agent", "pyrometer-collector": "collector"}.get(
                checks.image_name(c))
            if command:
                names = [e["name"] for e in c.get("env", []) if e["name"].startswith("PYROMETER_")]
                runs.append((command, c.get("args", []), names))
    for svc in compose["services"].values():
        command = {"pyrometer-agent:0.1.0": "agent"}.get(svc["image"])
        if command:
            runs.append((command, svc["command"], [n for n in svc.get("environment", {})]))
    return runs


def test_every_flag_and_variable_is_one_the_commands_take(rendered: dict[str, list[Doc]]) -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    runs = _flags_and_variables(rendered["sidecar-tls"], compose)
    assert sorted({c for c, _, _ in runs}) == ["agent", "collector"]
    for command, argv, names in runs:
        parser = _parser(command)
        try:
            parser.parse_args(argv)  # an unknown or misspelled flag raises
        except (argparse.ArgumentError, SystemExit) as exc:
            pytest.fail(f"pyrometer {command} {argv}: {exc}")
        known = set(re.findall(r"PYROMETER_[A-Z_]+", parser.format_help()))
        assert set(names) <= known, f"pyrometer {command} takes no {sorted(set(names) - known)}"


def test_a_misspelled_flag_or_variable_is_caught() -> None:
    parser = _parser("agent")
    with pytest.raises(SystemExit):
        parser.parse_args(["--spool-dirr=/var/spool/pyrometer"])
    assert "PYROMETER_TOKEN_FILES" not in set(re.findall(r"PYROMETER_[A-Z_]+", parser.format_help()))
