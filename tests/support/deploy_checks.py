"""Checks of rendered Kubernetes manifests that schemas cannot make.

A schema says each object is well formed; it cannot say that a Service's targetPort
names a port some pod has, that a mount has a volume, that a Secret exists, or that a
probe asks a port anything listens on. Each check takes the rendered documents and
returns the problems it found, one readable line each, so a test can assert both that
the real manifests have none and that a broken fixture has the one it was built with.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

Doc = dict[str, Any]
WORKLOAD_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"})
AGENT_CONTAINER = "pyrometer-agent"


@dataclass(frozen=True)
class Pod:
    """A pod template and the workload it came from."""

    where: str  # "Deployment/demo-model", for messages
    labels: Mapping[str, str]
    spec: Doc
    # a StatefulSet's volumeClaimTemplates: volumes each of its pods gets a claim for
    claims: frozenset[str] = frozenset()


def pods(docs: list[Doc]) -> Iterator[Pod]:
    for doc in docs:
        if doc.get("kind") in WORKLOAD_KINDS:
            template = doc["spec"]["template"]
            claims = frozenset(t["metadata"]["name"] for t in doc["spec"].get("volumeClaimTemplates", []))
            yield Pod(f"{doc['kind']}/{doc['metadata']['name']}",
                      template.get("metadata", {}).get("labels", {}), template["spec"], claims)


def workload(docs: list[Doc], pod: Pod) -> Doc:
    """The Deployment, StatefulSet, ... a pod template belongs to."""
    kind, name = pod.where.split("/", 1)
    return next(d for d in docs if d.get("kind") == kind and d["metadata"]["name"] == name)


def containers(pod: Pod) -> list[Doc]:
    return [*pod.spec.get("initContainers", []), *pod.spec.get("containers", [])]


def names_of(docs: list[Doc], kind: str) -> set[str]:
    return {d["metadata"]["name"] for d in docs if d.get("kind") == kind}


def _argv(container: Doc) -> list[str]:
    """command + args as one list, `--flag=value` split into two, so flags read alike."""
    words: list[str] = []
    for word in [*container.get("command", []), *container.get("args", [])]:
        words.extend(word.split("=", 1) if word.startswith("--") and "=" in word else [word])
    return words


def flag(container: Doc, name: str) -> str | None:
    argv = _argv(container)
    return argv[argv.index(name) + 1] if name in argv[:-1] else None


# what third-party images listen on when no flag of theirs says otherwise
DEFAULT_PORTS = {"postgres": 5432}


def listening_ports(container: Doc) -> set[int]:
    """The ports the container's process is told to listen on, from its own flags.

    The flags of the collector (--grpc-listen, --http-listen), the demo model server
    (--port), the agent (--proxy LISTEN=UPSTREAM) and MinIO (--address); PostgreSQL's
    default port.
    """
    ports: set[int] = set()
    for name in ("--grpc-listen", "--http-listen", "--address"):
        if (value := flag(container, name)) is not None:
            ports.add(int(value.rsplit(":", 1)[1]))
    if (value := flag(container, "--port")) is not None:
        ports.add(int(value))
    if (value := flag(container, "--proxy")) is not None:
        ports.add(int(value.split("=", 1)[0].rsplit(":", 1)[1]))
    if not ports and image_name(container) in DEFAULT_PORTS:
        ports.add(DEFAULT_PORTS[image_name(container)])
    return ports


def _port_number(container: Doc, port: int | str) -> int | None:
    """A probe's or Service's port in this container: a number, or a name it declares."""
    for declared in container.get("ports", []):
        if port in (declared.get("name"), declared["containerPort"]):
            return int(declared["containerPort"])
    return None


def service_target_ports(docs: list[Doc]) -> list[str]:
    """Every Service selects a pod, and each targetPort is a port of every pod it selects."""
    problems = []
    for svc in (d for d in docs if d.get("kind") == "Service"):
        name, selector = svc["metadata"]["name"], svc["spec"].get("selector", {})
        chosen = [p for p in pods(docs) if selector and selector.items() <= p.labels.items()]
        if not chosen:
            problems.append(f"Service/{name}: selector {selector} matches no pod template")
        for port in svc["spec"].get("ports", []):
            target = port.get("targetPort", port["port"])
            for pod in chosen:
                if not any(_port_number(c, target) is not None for c in containers(pod)):
                    problems.append(f"Service/{name} port {port.get('name', port['port'])}: "
                                    f"targetPort {target!r} is no container port of {pod.where}")
    return problems


def volume_mounts(docs: list[Doc]) -> list[str]:
    """Every volumeMount names a volume of its pod, and every volume is mounted somewhere."""
    problems = []
    for pod in pods(docs):
        volumes = {v["name"] for v in pod.spec.get("volumes", [])} | pod.claims
        mounted = set()
        for c in containers(pod):
            for mount in c.get("volumeMounts", []):
                mounted.add(mount["name"])
                if mount["name"] not in volumes:
                    problems.append(f"{pod.where} container {c['name']}: volumeMount "
                                    f"{mount['name']!r} has no volume")
        problems += [f"{pod.where}: volume {v!r} is mounted by no container"
                     for v in sorted(volumes - mounted)]
    return problems


def _has_key(docs: list[Doc], kind: str, name: str, key: str | None) -> bool:
    for d in docs:
        if d.get("kind") == kind and d["metadata"]["name"] == name:
            return key is None or key in {**d.get("data", {}), **d.get("stringData", {})}
    return False


def _references(pod: Pod) -> Iterator[tuple[str, str, str | None]]:
    """(kind, name, key or None) of every Secret, ConfigMap and claim the pod refers to."""
    for v in pod.spec.get("volumes", []):
        if "secret" in v:
            items = v["secret"].get("items") or [None]
            yield from (("Secret", v["secret"]["secretName"], i and i["key"]) for i in items)
        if "configMap" in v:
            items = v["configMap"].get("items") or [None]
            yield from (("ConfigMap", v["configMap"]["name"], i and i["key"]) for i in items)
        if "persistentVolumeClaim" in v:
            yield "PersistentVolumeClaim", v["persistentVolumeClaim"]["claimName"], None
    for c in containers(pod):
        for env in c.get("env", []):
            source = env.get("valueFrom", {})
            for field, kind in (("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")):
                if field in source and not source[field].get("optional"):
                    yield kind, source[field]["name"], source[field]["key"]
        for env_from in c.get("envFrom", []):
            for field, kind in (("secretRef", "Secret"), ("configMapRef", "ConfigMap")):
                if field in env_from and not env_from[field].get("optional"):
                    yield kind, env_from[field]["name"], None


def references_exist(docs: list[Doc]) -> list[str]:
    """Every Secret, ConfigMap (and key) and PersistentVolumeClaim a pod uses is rendered."""
    return [f"{pod.where}: {kind} {name!r}{f' key {key!r}' if key else ''} is not in the manifests"
            for pod in pods(docs) for kind, name, key in _references(pod)
            if not _has_key(docs, kind, name, key)]


def _probes(c: Doc) -> Iterator[tuple[str, Doc]]:
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        if kind in c:
            yield kind, c[kind]


def image_name(container: Doc) -> str:
    """The image's repository name without registry or tag: "pyrometer-agent"."""
    return re.split(r"[:@]", container["image"].rsplit("/", 1)[-1])[0]


def probes_served(docs: list[Doc], served_paths: Mapping[str, frozenset[str]]) -> list[str]:
    """Probes ask a port their container declares and listens on, for a path it serves.

    `served_paths` maps an image name to the HTTP paths its process answers; every
    containerPort must also be one the process is told to listen on.
    """
    problems = []
    for pod in pods(docs):
        for c in containers(pod):
            where = f"{pod.where} container {c['name']}"
            listening = listening_ports(c)
            for declared in c.get("ports", []):
                if declared["containerPort"] not in listening:
                    problems.append(f"{where}: port {declared.get('name')} "
                                    f"{declared['containerPort']} is not one its flags listen on "
                                    f"({sorted(listening)})")
            for kind, probe in _probes(c):
                handler = next((h for h in ("httpGet", "tcpSocket", "grpc") if h in probe), None)
                if handler is None:
                    continue  # exec probes run a command, with no port to check
                number = _port_number(c, probe[handler]["port"])
                if number is None:
                    problems.append(f"{where} {kind}: port {probe[handler]['port']!r} is not "
                                    "declared by the container")
                if handler == "httpGet":
                    path = probe["httpGet"].get("path", "/")
                    if path not in served_paths.get(image_name(c), frozenset()):
                        problems.append(f"{where} {kind}: {image_name(c)} does not serve {path}")
    return problems


def _effective(pod: Pod, c: Doc, field: str) -> Any:
    """A securityContext field as the kubelet resolves it: the container's, else the pod's."""
    return c.get("securityContext", {}).get(field, pod.spec.get("securityContext", {}).get(field))


def policy(docs: list[Doc]) -> list[str]:
    """What every pod must hold to, and the agent's exact privileges."""
    problems = []
    for pod in pods(docs):
        for host in ("hostPID", "hostIPC", "hostNetwork"):
            if pod.spec.get(host):
                problems.append(f"{pod.where}: {host} is set")
        for c in containers(pod):
            where, sc = f"{pod.where} container {c['name']}", c.get("securityContext", {})
            caps = sc.get("capabilities", {})
            if sc.get("privileged"):
                problems.append(f"{where}: privileged")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: allowPrivilegeEscalation is not false")
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: the root filesystem is writable")
            limits = c.get("resources", {}).get("limits", {})
            problems += [f"{where}: no {r} limit" for r in ("cpu", "memory") if r not in limits]
            if c["name"] == AGENT_CONTAINER:
                problems += _agent_policy(pod, c, where)
            else:
                if caps.get("drop") != ["ALL"] or caps.get("add"):
                    problems.append(f"{where}: capabilities {caps}, not exactly drop [ALL]")
                non_root = _effective(pod, c, "runAsNonRoot") is True
                if not non_root or _effective(pod, c, "runAsUser") in (None, 0):
                    problems.append(f"{where}: may run as root")
    return problems


def _agent_policy(pod: Pod, c: Doc, where: str) -> list[str]:
    problems = []
    caps = c.get("securityContext", {}).get("capabilities", {})
    if caps != {"drop": ["ALL"], "add": ["SYS_PTRACE"]}:
        problems.append(f"{where}: capabilities {caps}, not exactly drop [ALL] add [SYS_PTRACE]")
    # an added capability is effective only for UID 0 (kubernetes/kubernetes#56374)
    if _effective(pod, c, "runAsUser") != 0:
        problems.append(f"{where}: runAsUser is not 0, so SYS_PTRACE would not be effective")
    if pod.spec.get("shareProcessNamespace") is not True:
        problems.append(f"{pod.where}: shareProcessNamespace is not true, the agent sees no target")
    if flag(c, "--match") is None and flag(c, "--pid") is None:
        problems.append(f"{where}: neither --match nor --pid names the target")
    spool = flag(c, "--spool-dir")
    empty_dirs = {v["name"] for v in pod.spec.get("volumes", []) if "emptyDir" in v}
    if spool is None or not any(m["mountPath"] == spool and m["name"] in empty_dirs
                                for m in c.get("volumeMounts", [])):
        problems.append(f"{where}: --spool-dir {spool} is not an emptyDir mount")
    return problems


def env_value(docs: list[Doc], container: Doc, name: str) -> str | None:
    """An env var of the container as text: its value (with $(VAR) expanded), its
    ConfigMap key's value, or `<Secret NAME KEY>` for a Secret's (compared, never read);
    None when it is not set."""
    for entry in container.get("env", []):
        if entry["name"] != name:
            continue
        if "value" in entry:
            return expand(docs, container, entry["value"])
        source = entry.get("valueFrom", {})
        if "secretKeyRef" in source:
            return f"<Secret {source['secretKeyRef']['name']} {source['secretKeyRef']['key']}>"
        if "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            return next((d.get("data", {}).get(ref["key"]) for d in docs if d.get("kind") == "ConfigMap"
                         and d["metadata"]["name"] == ref["name"]), None)
    return None


def expand(docs: list[Doc], container: Doc, text: str) -> str:
    """`text` with each $(NAME) replaced by the env var's value, as the kubelet does."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                  lambda m: env_value(docs, container, m.group(1)) or m.group(0), text)


def collector_storage(docs: list[Doc]) -> list[str]:
    """Each collector keeps its data where it outlives the pod, with no more writers
    than its backend allows: a --db file on a mounted PersistentVolumeClaim, opened by one
    pod at a time (one replica, Recreate); a --lake data path on S3, nothing on a claim."""
    problems, seen = [], False
    for pod in pods(docs):
        claims = {v["name"] for v in pod.spec.get("volumes", []) if "persistentVolumeClaim" in v}
        for c in containers(pod):
            if image_name(c) != "pyrometer-collector":
                continue
            seen = True
            claimed = [m["mountPath"].rstrip("/") + "/" for m in c.get("volumeMounts", [])
                       if m["name"] in claims | pod.claims]
            if flag(c, "--lake") is not None:
                problems += _lake_storage(docs, pod, c, claimed)
            else:
                problems += _embedded_storage(docs, pod, c, claimed)
    return problems if seen else ["no collector container in the manifests"]


def _embedded_storage(docs: list[Doc], pod: Pod, c: Doc, claimed: list[str]) -> list[str]:
    problems = []
    db = flag(c, "--db")
    if db is None or not any(db.startswith(m) for m in claimed):
        problems.append(f"{pod.where}: --db {db} is not on a PersistentVolumeClaim mount "
                        f"({claimed or 'none'}); the data would die with the pod")
    spec = workload(docs, pod)["spec"]
    if spec.get("replicas", 1) != 1:
        problems.append(f"{pod.where}: {spec['replicas']} replicas of a --db collector; DuckDB "
                        "has one writer (many collectors need --lake)")
    if pod.where.startswith("Deployment/") and spec.get("strategy", {}).get("type") != "Recreate":
        problems.append(f"{pod.where}: strategy is not Recreate; a rollout would open the "
                        "DuckDB file from two pods")
    return problems


def _lake_storage(docs: list[Doc], pod: Pod, c: Doc, claimed: list[str]) -> list[str]:
    problems = []
    data_path = expand(docs, c, flag(c, "--data-path") or "")
    if not data_path.startswith("s3://"):
        problems.append(f"{pod.where}: --data-path {data_path or None} is not s3://; each "
                        "collector would write a folder of its own")
    if claimed:
        problems.append(f"{pod.where}: a --lake collector mounts a PersistentVolumeClaim "
                        f"({claimed}); it keeps nothing local, and a claim pins it to a node")
    return problems


def compose_policy(compose: Doc) -> list[str]:
    """The compose agent: the model's PID namespace, root with SYS_PTRACE alone."""
    services = compose.get("services", {})
    agent = next((s for s in services.values()
                  if shlex.join(s.get("command", [])).find("--match") >= 0), None)
    if agent is None:
        return ["no service runs the agent (--match)"]
    problems = []
    if not str(agent.get("pid", "")).startswith("service:"):
        problems.append(f"agent: pid is {agent.get('pid')!r}, not the model's (service:NAME)")
    if agent.get("cap_drop") != ["ALL"] or agent.get("cap_add") != ["SYS_PTRACE"]:
        problems.append(f"agent: cap_drop {agent.get('cap_drop')} cap_add {agent.get('cap_add')}, "
                        "not exactly ALL and SYS_PTRACE")
    if agent.get("privileged"):
        problems.append("agent: privileged")
    for name, svc in services.items():
        if svc.get("read_only") is not True:
            problems.append(f"{name}: the root filesystem is writable")
        if "no-new-privileges:true" not in svc.get("security_opt", []):
            problems.append(f"{name}: no no-new-privileges")
    return problems
