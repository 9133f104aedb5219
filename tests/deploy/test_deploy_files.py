"""deploy/: every file parses, every command exists in the code, every variable is a
setting, and grace periods outlast the Celery soft shutdown. No container engine needed."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.config import load_settings
from shared.taskqueue import create_celery
from tests.deploy.commands import LIBRARY_ENV, SETTINGS_ENV, check_command, check_shell_line
from tests.support.services import ROOT

DEPLOY = ROOT / "deploy"
SOFT_SHUTDOWN_S = create_celery(load_settings(environ={})).conf.worker_soft_shutdown_timeout
_REF = re.compile(r"\$\{([A-Z][A-Z0-9_]*)(?::([-?])([^}]*))?\}|\$([A-Z][A-Z0-9_]*)")


def expand(text: str) -> str:
    """Shell/compose variables replaced by their default, or a valid placeholder secret."""
    def value(m: re.Match[str]) -> str:
        if m.group(2) == "-":
            return m.group(3)
        return "placeholder-0123456789abcdef"

    return _REF.sub(value, text)


def settings_from(env: dict[str, Any]) -> None:
    """The variables a wapair process gets are settings (or library variables) and valid."""
    env = {k: expand(str(v)) for k, v in env.items()}
    unknown = set(env) - SETTINGS_ENV - LIBRARY_ENV
    assert not unknown, f"not settings: {unknown}"
    load_settings(environ={k: v for k, v in env.items() if k in SETTINGS_ENV})


def seconds(value: str | int) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(s|m)?", str(value))
    assert m, value
    return float(m.group(1)) * (60 if m.group(2) == "m" else 1)


def graceful_timeout(argv: list[str]) -> float:
    return float(argv[argv.index("--graceful-timeout") + 1])


# --- Procfile and Dockerfile ------------------------------------------------------
def test_procfile_commands_exist() -> None:
    lines = dict(line.split(": ", 1) for line in (ROOT / "Procfile").read_text().splitlines()
                 if line.strip())
    assert set(lines) == {"redis", "sandbox", "api", "worker", "beat", "flower"}
    for name, line in lines.items():
        # Every command is kept running by deploy/supervise.py (restart with backoff).
        wrapper = f"python deploy/supervise.py {name} -- "
        assert line.startswith(wrapper), name
        argv = shlex.split(expand(line[len(wrapper):]))
        inner = argv[2] if argv[:2] == ["sh", "-c"] else shlex.join(argv)
        programs = check_shell_line(inner)
        assert programs[-1] == {"redis": "wapair", "sandbox": "wapair", "api": "gunicorn"}.get(
            name, "celery"), name


def test_dockerfile_is_slim_non_root_and_runs_the_api() -> None:
    lines = [x for x in re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text()).splitlines()
             if x.strip() and not x.lstrip().startswith("#")]
    instructions = [(x.split(None, 1)[0].upper(), x.split(None, 1)[1]) for x in lines]
    froms = [arg for op, arg in instructions if op == "FROM"]
    assert froms and all(re.match(r"python:3\.11-slim\b", f) for f in froms)
    users = [arg for op, arg in instructions if op == "USER"]
    assert users and users[-1].strip() not in ("root", "0")
    last = [op for op, _ in instructions]
    assert last.index("USER") > max(i for i, op in enumerate(last) if op == "RUN")
    for op, arg in instructions:
        if op == "COPY" and not arg.startswith("--from"):
            for source in arg.split()[:-1]:
                assert (ROOT / source).exists(), source
        if op == "ENV":
            names = {m.split("=", 1)[0] for m in shlex.split(arg)}
            assert names <= SETTINGS_ENV | LIBRARY_ENV, names
    (cmd,) = [json.loads(arg) for op, arg in instructions if op == "CMD"]
    assert check_command(cmd) == "gunicorn"


# --- compose ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((DEPLOY / "compose.yaml").read_text()))


def test_compose_layout(compose: dict[str, Any]) -> None:
    services = compose["services"]
    kinds: dict[str, list[str]] = {}
    for name, service in services.items():
        if "command" not in service:  # an image's own entry point (postgres)
            continue
        argv = service["command"]
        program = check_command([expand(a) for a in argv])
        kind = argv[3] if program == "celery" else program
        kinds.setdefault(kind, []).append(name)
        if program in ("gunicorn", "celery"):
            settings_from(service["environment"])
            assert service["image"].startswith("${WAPAIR_IMAGE")
    assert len(kinds["gunicorn"]) == 2 and len(kinds["beat"]) == 2
    assert kinds["worker"] and kinds["flower"] == ["flower"]
    assert services["redis"]["command"][:3] == ["redis-server", "--appendonly", "yes"]
    assert services["postgres"]["image"].startswith("postgres:")
    worker_env = services["worker"]["environment"]
    assert worker_env["WA_STORE"].startswith("postgres://")
    assert worker_env["WA_STORE"].split("@")[1].startswith("postgres:")


def test_compose_grace_and_exposure(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert seconds(services["worker"]["stop_grace_period"]) > SOFT_SHUTDOWN_S
    for name in ("api1", "api2"):
        api = services[name]
        assert seconds(api["stop_grace_period"]) > graceful_timeout(api["command"])
        assert api["environment"]["PROMETHEUS_MULTIPROC_DIR"]
    # Flower's /metrics skips its auth: published on the host's loopback only.
    assert services["flower"]["ports"] == ["127.0.0.1:5555:5555"]
    for name, service in services.items():
        if name not in ("api1", "api2", "flower"):
            assert "ports" not in service, f"{name} must not be published"


# --- Kubernetes ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def k8s() -> list[dict[str, Any]]:
    docs = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def _kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _env(docs: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        name = source["configMapRef"]["name"]
        env.update(_kind(docs, "ConfigMap")[name]["data"])
    secrets = {**_kind(docs, "Secret")["wapair-secrets"]["stringData"]}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = secrets[ref["key"]]
    return env


def test_k8s_deployments(k8s: list[dict[str, Any]]) -> None:
    deployments = _kind(k8s, "Deployment")
    assert set(deployments) == {"wapair-api", "wapair-worker", "wapair-beat", "wapair-flower"}
    for name, d in deployments.items():
        spec = d["spec"]["template"]["spec"]
        labels = d["spec"]["template"]["metadata"]["labels"]
        assert d["spec"]["selector"]["matchLabels"].items() <= labels.items(), name
        assert spec["securityContext"]["runAsNonRoot"] is True
        (container,) = spec["containers"]
        check_command(container["command"])
        settings_from(_env(k8s, container))
    api = deployments["wapair-api"]
    assert api["spec"]["replicas"] >= 2 and deployments["wapair-beat"]["spec"]["replicas"] == 2
    (api_container,) = api["spec"]["template"]["spec"]["containers"]
    assert api_container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert api["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > graceful_timeout(
        api_container["command"])
    worker = deployments["wapair-worker"]["spec"]["template"]["spec"]
    assert worker["terminationGracePeriodSeconds"] > SOFT_SHUTDOWN_S
    check_command(worker["containers"][0]["livenessProbe"]["exec"]["command"])


def test_k8s_disruption_budgets_and_privacy(k8s: list[dict[str, Any]]) -> None:
    deployments = _kind(k8s, "Deployment")
    budgets = _kind(k8s, "PodDisruptionBudget")
    covered = set()
    for budget in budgets.values():
        selector = budget["spec"]["selector"]["matchLabels"]
        covered |= {n for n, d in deployments.items()
                    if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()}
    assert {"wapair-api", "wapair-worker"} <= covered
    assert budgets["wapair-worker"]["spec"]["maxUnavailable"] == 1
    services = _kind(k8s, "Service")
    assert services["wapair-flower"]["spec"]["type"] == "ClusterIP"
    assert not _kind(k8s, "Ingress")
    policies = _kind(k8s, "NetworkPolicy")
    assert {"wapair-flower", "wapair-worker"} <= set(policies)


# --- systemd ------------------------------------------------------------------------------
def unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A systemd unit as section -> key -> values (keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, sep, value = line.partition("=")
        assert current is not None and sep, f"{path.name}: {raw!r}"
        current.setdefault(key, []).append(value)
    return sections


def systemd_specifiers(text: str) -> str:
    """What systemd hands the program: %i the instance, %H the host name, %% a percent sign."""
    samples = {"i": "1", "I": "1", "H": "vm1", "n": "unit.service", "%": "%"}
    return re.sub(r"%(.)", lambda m: samples[m.group(1)], text)


def env_file(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines()
                if line.strip() and not line.startswith("#"))


def test_systemd_units() -> None:
    units = {p.name: unit(p) for p in (DEPLOY / "systemd").glob("*.service")}
    assert set(units) == {"wapair-api.service", "wapair-worker@.service",
                          "wapair-beat.service", "wapair-flower.service"}
    base_env = env_file(DEPLOY / "systemd" / "wapair.env.example")
    settings_from(base_env)
    for sections in units.values():
        service = sections["Service"]
        assert service["User"] == ["wapair"] and sections["Install"]["WantedBy"]
        (exec_start,) = service["ExecStart"]
        check_command(shlex.split(systemd_specifiers(exec_start)))
        extra = dict(e.split("=", 1) for e in service.get("Environment", []))
        settings_from({**base_env, **extra})
    worker = units["wapair-worker@.service"]["Service"]
    assert seconds(worker["TimeoutStopSec"][0]) > SOFT_SHUTDOWN_S
    assert worker["KillSignal"] == ["SIGTERM"]
    api = units["wapair-api.service"]["Service"]
    assert seconds(api["TimeoutStopSec"][0]) > graceful_timeout(shlex.split(api["ExecStart"][0]))
    assert "--address=127.0.0.1" in units["wapair-flower.service"]["Service"]["ExecStart"][0]


def test_example_env_files_hold_only_settings() -> None:
    compose_env = env_file(DEPLOY / "compose.env.example")
    assert set(compose_env) == {"POSTGRES_PASSWORD", "ADMIN_TOKEN", "METRICS_TOKEN",
                                "FLOWER_BASIC_AUTH", "WAPAIR_IMAGE"}
    compose_refs = set(re.findall(r"\$\{([A-Z_]+)", (DEPLOY / "compose.yaml").read_text()))
    assert compose_refs <= set(compose_env)


def test_make_test_type_checks_every_package() -> None:
    makefile = (ROOT / "Makefile").read_text()
    test_recipe = makefile[makefile.index("\ntest:"):].split("\n\n")[0]
    assert "mypy shared api workers" in test_recipe


def test_the_sentinel_variant_points_every_wapair_service_at_the_sentinels(
    compose: dict[str, Any],
) -> None:
    sentinel = yaml.safe_load((DEPLOY / "compose.sentinel.yaml").read_text())
    wapair = [name for name, svc in compose["services"].items() if "environment" in svc
              and "REDIS_URL" in svc["environment"]]
    assert wapair, "compose.yaml's wapair services"
    for name in wapair:
        env = sentinel["services"][name]["environment"]
        settings = load_settings(environ={k: str(v) for k, v in env.items()})
        assert settings.redis_sentinel_master == "wapair"
        assert {host for host, _ in settings.redis_sentinels} == {
            "sentinel1", "sentinel2", "sentinel3"}
    for name in ("sentinel1", "sentinel2", "sentinel3"):
        assert "sentinel monitor wapair redis 6379 2" in " ".join(
            sentinel["services"][name]["entrypoint"])
    assert "--replicaof" in sentinel["services"]["redis-replica"]["command"]
