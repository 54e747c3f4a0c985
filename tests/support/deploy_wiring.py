"""Checks that the parts of a deployment reach each other: the lake's and compose's.

A lake collector names its catalog and its S3 endpoint by host and port, and reads their
passwords from variables: nothing but a test notices when the host is no Service, the
password is another Secret's than PostgreSQL's, or no one makes the bucket. The same
rules hold for the Kubernetes example and the compose file, so they are written once,
over `Part`s (a container, or a compose service) and a `find` that says which part
answers at HOST:PORT. Like support/deploy_checks.py, each check returns one readable
line per problem.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from support.deploy_checks import Doc, containers, env_value, expand, pods

_DEFAULT_PORTS = {"postgres": 5432, "postgresql": 5432, "http": 80, "https": 443}


@dataclass(frozen=True)
class Part:
    """One process of the deployment: its argv (`--flag=value` split) and its env as text."""

    where: str
    argv: list[str]
    env: Mapping[str, str]

    def flag(self, name: str) -> str | None:
        return self.argv[self.argv.index(name) + 1] if name in self.argv[:-1] else None


Finder = Callable[[str, int], "Part | str"]  # the part at HOST:PORT, or why there is none


def _host_port(url: str) -> tuple[str, int]:
    """HOST and PORT of a URL, parsed by hand: the user part may hold `<Secret ...>`."""
    scheme, _, rest = url.partition("://")
    netloc = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    host, _, port = netloc.partition(":")
    return host, int(port) if port else _DEFAULT_PORTS.get(scheme, 0)


def _user_password(url: str) -> tuple[str | None, str | None]:
    netloc = url.partition("://")[2].split("/", 1)[0]
    if "@" not in netloc:
        return None, None
    user, _, password = netloc.rsplit("@", 1)[0].partition(":")
    return user, password or None


def lake_wiring(parts: list[Part], find: Finder) -> list[str]:
    """Every --lake collector reaches its catalog and its store with their own credentials,
    and some part makes the bucket of its data path."""
    collectors = [p for p in parts if p.flag("--lake")]
    if not collectors:
        return ["no collector runs with --lake"]
    problems = []
    for c in collectors:
        problems += _catalog(c, find)
        problems += _store(c, parts, find)
    return problems


def _catalog(c: Part, find: Finder) -> list[str]:
    catalog = c.flag("--lake") or ""
    user, password = _user_password(catalog)
    if password:
        return [f"{c.where}: the catalog URL holds its password; give it as PGPASSWORD"]
    host, port = _host_port(catalog)
    server = find(host, port)
    if isinstance(server, str):
        return [f"{c.where}: catalog {host}:{port}: {server}"]
    problems = []
    database = catalog.partition("://")[2].split("/", 1)[1].split("?", 1)[0]
    for variable, want in (("POSTGRES_USER", user), ("POSTGRES_DB", database)):
        if server.env.get(variable) != want:
            problems.append(f"{c.where}: the catalog URL says {want!r}, {server.where} has "
                            f"{variable} {server.env.get(variable)!r}")
    if c.env.get("PGPASSWORD") is None or c.env.get("PGPASSWORD") != server.env.get("POSTGRES_PASSWORD"):
        problems.append(f"{c.where}: PGPASSWORD {c.env.get('PGPASSWORD')} is not {server.where}'s "
                        f"POSTGRES_PASSWORD {server.env.get('POSTGRES_PASSWORD')}")
    return problems


def _store(c: Part, parts: list[Part], find: Finder) -> list[str]:
    data_path = c.flag("--data-path") or ""
    endpoint = c.env.get("AWS_ENDPOINT_URL_S3") or c.env.get("AWS_ENDPOINT_URL")
    if not data_path.startswith("s3://") or not endpoint:
        return []  # AWS S3 itself: nothing here to reach
    host, port = _host_port(endpoint)
    server = find(host, port)
    if isinstance(server, str):
        return [f"{c.where}: S3 endpoint {host}:{port}: {server}"]
    problems = []
    keys = (c.env.get("AWS_ACCESS_KEY_ID"), c.env.get("AWS_SECRET_ACCESS_KEY"))
    if keys != (server.env.get("MINIO_ROOT_USER"), server.env.get("MINIO_ROOT_PASSWORD")):
        problems.append(f"{c.where}: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY {keys} are not "
                        f"{server.where}'s MINIO_ROOT_USER/MINIO_ROOT_PASSWORD")
    bucket = data_path[len("s3://"):].split("/", 1)[0]
    makers = [p for p in parts if "mb" in p.argv and any(a.endswith(f"/{bucket}") for a in p.argv)]
    if not makers:
        problems.append(f"{c.where}: nothing makes the bucket {bucket!r} of --data-path {data_path}")
    for maker in makers:
        alias = next(a for a in maker.argv if a.endswith(f"/{bucket}")).split("/", 1)[0]
        url = maker.env.get(f"MC_HOST_{alias}", "")
        if (_host_port(url) if url else None) != (host, port) or _user_password(url) != keys:
            problems.append(f"{maker.where}: mc's alias {alias!r} ({url or 'unset'}) is not "
                            f"{host}:{port} with the collectors' keys")
    return problems


# Kubernetes: parts are containers, found through the Service named by the host.

def k8s_parts(docs: list[Doc]) -> list[Part]:
    found = []
    for pod in pods(docs):
        for c in containers(pod):
            argv = [expand(docs, c, w) for w in [*c.get("command", []), *c.get("args", [])]]
            env = {e["name"]: v for e in c.get("env", [])
                   if (v := env_value(docs, c, e["name"])) is not None}
            found.append(Part(f"{pod.where} container {c['name']}", _split(argv), env))
    return found


def k8s_finder(docs: list[Doc]) -> Finder:
    parts = {p.where: p for p in k8s_parts(docs)}

    def find(host: str, port: int) -> Part | str:
        svc = next((d for d in docs if d.get("kind") == "Service" and d["metadata"]["name"] == host), None)
        if svc is None:
            return "no Service of that name"
        target = next((p.get("targetPort", p["port"]) for p in svc["spec"].get("ports", [])
                       if p["port"] == port), None)
        if target is None:
            return f"Service/{host} has no port {port}"
        selector = svc["spec"].get("selector", {})
        for pod in pods(docs):
            if selector and selector.items() <= pod.labels.items():
                for c in containers(pod):
                    if any(target in (d.get("name"), d["containerPort"]) for d in c.get("ports", [])):
                        return parts[f"{pod.where} container {c['name']}"]
        return f"Service/{host} port {port} reaches no container"
    return find


# Compose: parts are services, found by service name (each listens where its flags say).

def compose_parts(compose: Doc) -> list[Part]:
    return [Part(name, _split([str(w) for w in [*_words(svc.get("entrypoint")),
                                               *_words(svc.get("command"))]]),
                 {k: str(v) for k, v in _environment(svc).items()})
            for name, svc in compose.get("services", {}).items()]


def compose_finder(compose: Doc) -> Finder:
    parts = {p.where: p for p in compose_parts(compose)}
    return lambda host, port: parts.get(host) or "no service of that name"


def compose_dependencies(compose: Doc) -> list[str]:
    """Every depends_on names a service that can satisfy its condition; replicas do not
    share one host port; an agent waits for the collector it ships to; a --lake collector
    waits for its catalog and for the bucket to be made."""
    services: dict[str, Doc] = compose.get("services", {})
    problems = []
    for name, svc in services.items():
        waits = _depends_on(svc)
        for dep, condition in waits.items():
            if dep not in services:
                problems.append(f"{name}: depends on {dep}, which is no service")
            elif condition == "service_healthy" and "healthcheck" not in services[dep]:
                problems.append(f"{name}: waits for {dep} to be healthy, and {dep} has no healthcheck")
            elif condition == "service_completed_successfully" and services[dep].get("restart") in (
                    "always", "unless-stopped"):
                problems.append(f"{name}: waits for {dep} to complete, and {dep} restarts for ever")
        problems += _published_ports(name, svc)
        for needs, condition in _needs(name, svc, services):
            if waits.get(needs) != condition:
                problems.append(f"{name}: reaches {needs} but does not wait for it ({condition})")
    return problems


def _needs(name: str, svc: Doc, services: dict[str, Doc]) -> list[tuple[str, str]]:
    """(service, condition) this one must wait for before it starts."""
    part = next(p for p in compose_parts({"services": {name: svc}}))
    needs = []
    if collector := part.env.get("PYROMETER_COLLECTOR"):
        needs.append((collector.rsplit(":", 1)[0], "service_healthy"))
    if catalog := part.flag("--lake"):
        needs.append((_host_port(catalog)[0], "service_healthy"))
        bucket = (part.flag("--data-path") or "").removeprefix("s3://").split("/", 1)[0]
        needs += [(other, "service_completed_successfully") for other, s in services.items()
                  if any(str(w).endswith(f"/{bucket}") for w in _words(s.get("command")))]
    return needs


def _published_ports(name: str, svc: Doc) -> list[str]:
    replicas = int(svc.get("deploy", {}).get("replicas", 1))
    problems = []
    for port in svc.get("ports", []):
        if isinstance(port, dict):  # the long syntax
            published = str(port.get("published", ""))
        else:  # [HOST_IP:][PUBLISHED:]TARGET
            published = str(port).rsplit(":", 1)[0].rsplit(":", 1)[-1] if ":" in str(port) else ""
        low, _, high = published.partition("-")
        count = int(high) - int(low) + 1 if high else 1 if low else replicas
        if count < replicas:
            problems.append(f"{name}: {replicas} replicas and host port {published} for "
                            f"{count}; publish a range of {replicas}")
    return problems


def _depends_on(svc: Doc) -> dict[str, str]:
    deps = svc.get("depends_on", {})
    if isinstance(deps, list):
        return {d: "service_started" for d in deps}
    return {d: spec.get("condition", "service_started") for d, spec in deps.items()}


def _environment(svc: Doc) -> dict[str, Any]:
    env = svc.get("environment", {})
    if isinstance(env, list):
        return dict(e.split("=", 1) if "=" in e else (e, "") for e in env)
    return dict(env)


def _words(value: Any) -> list[Any]:
    if value is None:
        return []
    return value.split() if isinstance(value, str) else list(value)


def _split(argv: list[str]) -> list[str]:
    words: list[str] = []
    for word in argv:
        words.extend(word.split("=", 1) if word.startswith("--") and "=" in word else [word])
    return words

