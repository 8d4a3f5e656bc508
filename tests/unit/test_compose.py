"""The docker compose stack, checked without a Docker engine.

The compose file, the Dockerfile, the Prometheus config and the Grafana dashboard are
parsed and checked against the code they run: every ``EDDY_*`` variable is a real
``Settings`` field, every container command parses as a real ``eddy`` command, the
init script and the worker healthcheck are executed (against a stand-in ``eddy`` and a
local HTTP server), and the dashboard queries only the metrics the worker exports.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml

from streams.cli import app
from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "infra" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PROMETHEUS_CONFIG = ROOT / "infra" / "prometheus.yml"
GRAFANA = ROOT / "infra" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "eddy.json"

HOST_ENV = {"REDIS_PASSWORD": "test-password"}
"""The only host variable the stack requires; everything else has a default."""

IMAGE_WORKDIR = "/app"
"""WORKDIR of infra/Dockerfile: the repository root inside the image."""

CORE_SERVICES = {"kafka", "redis", "eddy-init", "eddy-worker"}
PROFILES = {"demo": {"eddy-demo"}, "monitoring": {"prometheus", "grafana"}}
PUBLISHING_SERVICES = {"kafka", "redis", "grafana"}
"""Producers need Kafka, the product reads Redis, operators open Grafana; nothing else."""

INTEGRATION_COMMANDS = {"worker", "topics", "train", "replay"}
"""The ``eddy`` commands the integration tests run on the embedded stack."""

DASHBOARD_METRICS = frozenset(
    {
        "eddy_events_total",
        "eddy_dead_letters_total",
        "eddy_consumer_lag",
        "eddy_freshness_seconds",
        "eddy_retrieval_seconds",
        "eddy_explored_slots_total",
        "eddy_slots_total",
        "eddy_variant_clicks_total",
        "eddy_variant_impressions_total",
    }
)
"""Metric names the worker exports on /metrics (streams, another module's contract)."""
HISTOGRAMS = frozenset({"eddy_freshness_seconds", "eddy_retrieval_seconds"})
PROMETHEUS_BUILTINS = frozenset({"up"})

SETTINGS_ENV = frozenset(f"EDDY_{name.upper()}" for name in Settings.model_fields)
EDDY_VAR = re.compile(r"\bEDDY_[A-Z0-9_]+")


# --- compose variable interpolation (the subset compose documents) --------------------
class MissingVariableError(Exception):
    """A required host variable (``${VAR:?message}``) is unset or empty."""


_INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<invalid>))"
)


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """``$$``, ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?err}``."""

    def sub(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        if match["invalid"] is not None and not match["braced"] and not match["named"]:
            raise ValueError(f"invalid interpolation at {text[match.start() :]!r}")
        name = match["braced"] or match["named"]
        value, op, arg = env.get(name), match["op"], match["arg"]
        if op == ":-":
            return value or arg
        if op == "-":
            return arg if value is None else value
        if op in (":?", "?") and (value is None or (op == ":?" and not value)):
            raise MissingVariableError(f"{name}: {arg}")
        return value or ""

    return _INTERPOLATION.sub(sub, text)


def resolve(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, dict):
        return {key: resolve(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [resolve(value, env) for value in node]
    return node


def load_compose(env: Mapping[str, str] = HOST_ENV) -> dict[str, Any]:
    """The compose file as ``docker compose config`` would see it (anchors merged)."""
    return resolve(yaml.safe_load(COMPOSE_FILE.read_text()), env)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]  # type: ignore[no-any-return]


def env_of(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(key): str(value) for key, value in env.items()}


def is_one_shot(service: Mapping[str, Any]) -> bool:
    return service.get("restart") == "no"


def uses_eddy_image(service: Mapping[str, Any]) -> bool:
    return "build" in service


# --- Dockerfile ------------------------------------------------------------------------
def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        pending += stripped
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        word, _, rest = pending.partition(" ")
        out.append((word.upper(), rest.strip()))
        pending = ""
    return out


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in dockerfile_instructions():
        if word == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def dockerfile_entrypoint() -> list[str]:
    (entrypoint,) = [
        json.loads(rest) for word, rest in dockerfile_instructions() if word == "ENTRYPOINT"
    ]
    return entrypoint  # type: ignore[no-any-return]


# --- the compose file -----------------------------------------------------------------
def test_compose_parses_and_requires_the_redis_password() -> None:
    compose = load_compose()
    assert compose["name"] == "eddy"
    with pytest.raises(MissingVariableError, match="REDIS_PASSWORD"):
        load_compose({})
    with pytest.raises(MissingVariableError, match="REDIS_PASSWORD"):
        load_compose({"REDIS_PASSWORD": ""})


def test_services_and_profiles(services: dict[str, dict[str, Any]]) -> None:
    by_profile: dict[str, set[str]] = {}
    for name, service in services.items():
        for profile in service.get("profiles", []):
            by_profile.setdefault(profile, set()).add(name)
    assert by_profile == PROFILES
    assert set(services) - set().union(*PROFILES.values()) == CORE_SERVICES
    for name in CORE_SERVICES:  # the core stack never waits on an optional service
        for dependency in services[name].get("depends_on", {}):
            assert dependency in CORE_SERVICES, f"{name} depends on optional {dependency}"


def test_images_are_pinned_or_built_from_the_dockerfile(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in services.items():
        image = service.get("image")
        assert image, f"{name} has no image"
        repository, _, tag = image.rpartition(":")
        assert repository, f"{name}: image {image} has no tag"
        assert "/" not in tag, f"{name}: image {image} has no tag"
        assert "latest" not in image, f"{name}: {image}"
        assert re.fullmatch(r"v?\d+\.\d+\.\d+(-[a-z0-9.-]+)?", tag), f"{name}: {image} not pinned"
        if "build" in service:
            build = service["build"]
            assert build["context"] == "."
            assert (ROOT / build["dockerfile"]).resolve() == DOCKERFILE
    eddy_images = {s["image"] for s in services.values() if uses_eddy_image(s)}
    assert len(eddy_images) == 1, f"every Eddy service runs one image: {eddy_images}"
    assert {n for n, s in services.items() if uses_eddy_image(s)} == {
        "eddy-init",
        "eddy-worker",
        "eddy-demo",
    }


def test_restart_policies_and_healthchecks(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        assert "restart" in service, f"{name} has no restart policy"
        if is_one_shot(service):
            assert "healthcheck" not in service, f"one-shot {name} needs no healthcheck"
            continue
        assert service["restart"] in ("unless-stopped", "always"), name
        check = service.get("healthcheck")
        assert check, f"long-running {name} has no healthcheck"
        assert not check.get("disable"), f"{name} disables its healthcheck"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
        assert len(check["test"]) > 1, name
        for key in ("interval", "timeout", "retries", "start_period"):
            assert key in check, f"{name} healthcheck lacks {key}"
    assert [s for s in services if is_one_shot(services[s])] == ["eddy-init", "eddy-demo"]

    def command(service: str) -> str:
        return " ".join(services[service]["healthcheck"]["test"][1:])

    assert "kafka-broker-api-versions.sh" in command("kafka")
    assert "redis-cli" in command("redis")
    assert "ping" in command("redis")
    assert "REDISCLI_AUTH" in env_of(services["redis"]), "redis-cli must authenticate"
    assert "urllib.request" in command("eddy-worker")
    assert "/health" in command("eddy-worker")


def test_dependencies_wait_for_health_or_completion(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        depends_on = service.get("depends_on", {})
        assert isinstance(depends_on, dict), f"{name}: depends_on needs conditions"
        for dependency, spec in depends_on.items():
            expected = (
                "service_completed_successfully"
                if is_one_shot(services[dependency])
                else "service_healthy"
            )
            assert spec["condition"] == expected, f"{name} -> {dependency}"
    worker = services["eddy-worker"]["depends_on"]
    assert set(worker) == {"eddy-init", "kafka", "redis"}


def test_volumes_are_named_and_declared_and_binds_exist(compose: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    used: set[str] = set()
    for name, service in compose["services"].items():
        for spec in service.get("volumes", []):
            source, target, *mode = spec.split(":")
            assert target.startswith("/"), f"{name}: {spec}"
            if source.startswith((".", "/")):
                assert source.startswith("./"), f"{name}: bind mount outside the repo: {spec}"
                assert (ROOT / source).exists(), f"{name}: {source} missing"
                assert mode == ["ro"], f"{name}: bind mounts are read-only: {spec}"
            else:
                assert source in declared, f"{name}: volume {source} not declared"
                used.add(source)
    assert used == declared, f"declared but unused: {declared - used}"
    models = [v for v in compose["services"]["eddy-worker"]["volumes"] if "eddy-models" in v]
    assert len(models) == 1
    assert models[0].endswith(":ro"), "workers only read the shared model volume"


def published_ports(service: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(host ip, host port, container port) of each published port."""
    out = []
    for spec in service.get("ports", []):
        if isinstance(spec, dict):
            out.append((spec.get("host_ip", ""), str(spec["published"]), str(spec["target"])))
            continue
        parts = str(spec).split(":")
        assert len(parts) == 3, f"port {spec} must name its host ip"
        out.append((parts[0], parts[1], parts[2]))
    return out


def test_only_needed_ports_are_published_on_localhost(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        ports = published_ports(service)
        if name not in PUBLISHING_SERVICES:
            assert not ports, f"{name} publishes {ports}"
            continue
        assert ports, f"{name} should be reachable from the host"
        for host_ip, _, _ in ports:
            assert host_ip == "127.0.0.1", f"{name} publishes on {host_ip or 'all interfaces'}"
    worker = services["eddy-worker"]
    assert "container_name" not in worker, "a fixed container name prevents --scale"


@pytest.mark.parametrize("host_port", [None, "19092"])
def test_kafka_listeners_internal_for_workers_external_for_the_host(
    host_port: str | None,
) -> None:
    env = dict(HOST_ENV, **({"KAFKA_HOST_PORT": host_port} if host_port else {}))
    services = load_compose(env)["services"]
    kafka = env_of(services["kafka"])

    def listeners(key: str) -> dict[str, str]:
        return dict(item.split("://", 1) for item in kafka[key].split(","))

    advertised, bound = listeners("KAFKA_ADVERTISED_LISTENERS"), listeners("KAFKA_LISTENERS")
    assert kafka["KAFKA_INTER_BROKER_LISTENER_NAME"] == "INTERNAL"
    for name, service in services.items():
        if uses_eddy_image(service):
            assert env_of(service)["EDDY_KAFKA_BOOTSTRAP"] == advertised["INTERNAL"], name
    ((_, published, target),) = published_ports(services["kafka"])
    assert published == (host_port or "9092")
    assert advertised["EXTERNAL"] == f"localhost:{published}"
    assert bound["EXTERNAL"] == f":{target}"
    assert kafka["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false", "eddy topics creates them"
    assert kafka["KAFKA_LOG_DIRS"] in {v.split(":")[1] for v in services["kafka"]["volumes"]}
    assert len(kafka["CLUSTER_ID"]) == 22, "a base64 UUID"


def test_redis_url_carries_the_required_password(services: dict[str, dict[str, Any]]) -> None:
    redis_env = env_of(services["redis"])
    assert redis_env["REDIS_PASSWORD"] == HOST_ENV["REDIS_PASSWORD"]
    assert '--requirepass "$REDIS_PASSWORD"' in " ".join(services["redis"]["command"])
    for name, service in services.items():
        if uses_eddy_image(service):
            url = env_of(service)["EDDY_REDIS_URL"]
            assert url == f"redis://:{HOST_ENV['REDIS_PASSWORD']}@redis:6379/0", name


# --- EDDY_* variables and the commands the containers run -----------------------------
def test_every_eddy_variable_is_a_settings_field() -> None:
    for path in (COMPOSE_FILE, DOCKERFILE):
        unknown = set(EDDY_VAR.findall(path.read_text())) - SETTINGS_ENV
        assert not unknown, f"{path.name}: not Settings fields: {sorted(unknown)}"


def test_eddy_services_environment_is_valid_settings(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    image_env = dockerfile_env()
    for name, service in services.items():
        if not uses_eddy_image(service):
            continue
        env = {**image_env, **env_of(service)}
        assert "EDDY_WORKER_ID" not in env, "the default <hostname>-<pid> is unique per container"
        for key in list(os.environ):
            if key.startswith("EDDY_"):
                monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        settings = Settings(_env_file=None)
        assert settings.kafka_bootstrap == "kafka:9092", name
        assert settings.web_host == "0.0.0.0", f"{name}: Prometheus scrapes over the network"
        assert str(settings.model_dir) == "/var/lib/eddy/models", name
        mounted = [v.split(":")[1] for v in service.get("volumes", [])]
        if name != "eddy-demo":
            assert str(settings.model_dir) in mounted, f"{name} must see the shared models"


def container_commands(service: Mapping[str, Any]) -> list[list[str]]:
    """The ``eddy`` invocations a container runs: argv after ``eddy``."""
    entrypoint = service.get("entrypoint") or dockerfile_entrypoint()
    command = service.get("command") or ["worker"]
    if entrypoint == ["eddy"]:
        return [list(command)]
    assert entrypoint == ["sh", "-c"], entrypoint
    assert len(command) == 1, command
    out = []
    for segment in re.split(r"&&|\|\||;|\b(?:if|then|else|fi)\b", command[0]):
        argv = shlex.split(segment)
        if argv and argv[0] == "eddy":
            out.append(argv[1:])
    return out


def test_containers_run_real_eddy_commands(services: dict[str, dict[str, Any]]) -> None:
    cli = typer.main.get_command(app)
    commands = cli.commands  # type: ignore[attr-defined]
    used = set()
    for name, service in services.items():
        if not uses_eddy_image(service):
            continue
        invocations = container_commands(service)
        assert invocations, f"{name} runs no eddy command"
        for argv in invocations:
            sub, *args = argv
            assert sub in commands, f"{name}: `eddy {sub}` is not a command"
            ctx = commands[sub].make_context(sub, list(args))  # raises on unknown options
            for value in ctx.params.values():
                if isinstance(value, Path) and str(value).startswith(IMAGE_WORKDIR + "/"):
                    in_repo = ROOT / value.relative_to(IMAGE_WORKDIR)
                    assert in_repo.exists(), f"{name}: {value} is not in the image"
            used.add(sub)
    assert used == INTEGRATION_COMMANDS


def test_init_runs_topics_then_trains_only_without_an_artefact(
    services: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    """Run eddy-init's script with a stand-in ``eddy`` that records its arguments."""
    init = services["eddy-init"]
    bin_dir, calls, models = tmp_path / "bin", tmp_path / "calls", tmp_path / "models"
    bin_dir.mkdir()
    models.mkdir()
    fake = bin_dir / "eddy"
    fake.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n[ "$1" != "$EDDY_FAIL" ]\n')
    fake.chmod(0o755)

    def run(fail: str = "") -> tuple[int, list[str]]:
        calls.unlink(missing_ok=True)
        env = {
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "EDDY_MODEL_DIR": str(models),
            "EDDY_FAIL": fail,
        }
        proc = subprocess.run(
            [*init["entrypoint"], *init["command"]], env=env, capture_output=True, timeout=30
        )
        return proc.returncode, calls.read_text().splitlines() if calls.exists() else []

    assert run() == (0, ["topics", "train"])
    assert run(fail="topics") == (1, ["topics"])  # no broker: fail, do not train
    assert run(fail="train")[0] != 0  # a failed training fails the init (workers wait)
    (models / "LATEST").write_text("cf-0\n")
    assert run() == (0, ["topics"])


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health" and self.server.healthy else 503)  # type: ignore[attr-defined]
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[HTTPServer]:
    server = HTTPServer(("127.0.0.1", 0), _Health)
    server.healthy = True  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_worker_healthcheck_probes_health_on_the_web_port(
    services: dict[str, dict[str, Any]], health_server: HTTPServer
) -> None:
    test = services["eddy-worker"]["healthcheck"]["test"]
    assert test[:2] == ["CMD", "python"]
    env = {"EDDY_WEB_PORT": str(health_server.server_address[1]), "PATH": os.environ["PATH"]}
    argv = [sys.executable, *test[2:]]
    assert subprocess.run(argv, env=env, capture_output=True, timeout=30).returncode == 0
    health_server.healthy = False  # type: ignore[attr-defined]
    assert subprocess.run(argv, env=env, capture_output=True, timeout=30).returncode != 0
    assert env_of(services["eddy-worker"])["EDDY_WEB_PORT"] == "6066"


# --- Dockerfile and .dockerignore -----------------------------------------------------
def test_dockerfile_pinned_non_root_and_layered() -> None:
    steps = dockerfile_instructions()
    words = [word for word, _ in steps]
    (base,) = [rest for word, rest in steps if word == "FROM"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-[a-z]+)?", base), base
    users = [rest for word, rest in steps if word == "USER"]
    assert users, "the image must set a user"
    assert users[-1] not in ("root", "0"), "the image must run as non-root"
    assert words.index("USER") < words.index("ENTRYPOINT")
    assert dockerfile_entrypoint() == ["eddy"]
    copies = [rest for word, rest in steps if word == "COPY"]
    assert copies[0] == "pyproject.toml ./", "dependencies are installed from pyproject alone"
    deps = next(i for i, (w, r) in enumerate(steps) if w == "RUN" and "pip install -r" in r)
    first_source = next(i for i, (w, r) in enumerate(steps) if w == "COPY" and "models" in r)
    assert deps < first_source, "dependency layer must come before the source"
    assert "data ./data" in copies, "eddy train and the demo need the bundled MovieLens"
    assert (ROOT / "data" / "movielens" / "README.txt").exists(), "its licence ships with it"
    assert "latest" not in DOCKERFILE.read_text()


def test_dockerignore_keeps_secrets_out_and_the_build_inputs_in() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for needed in (".git", ".venv", ".env", ".eddy", "artifacts"):
        assert needed in patterns, f".dockerignore lacks {needed}"
    sources = [
        src
        for word, rest in dockerfile_instructions()
        if word == "COPY"
        for src in rest.split()[:-1]
        if not src.startswith("--")
    ]
    assert {"pyproject.toml", "README.md", "models", "streams", "infra", "data"} <= set(sources)
    for src in sources:
        assert (ROOT / src).exists(), src
        for pattern in patterns:
            assert not fnmatch.fnmatch(src, pattern.rstrip("/")), f"{pattern} drops {src}"


# --- Prometheus and Grafana ----------------------------------------------------------
def test_prometheus_discovers_every_worker(services: dict[str, dict[str, Any]]) -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "eddy-worker"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    (sd,) = job["dns_sd_configs"]
    assert sd["names"] == ["eddy-worker"]
    assert sd.get("type", "SRV") == "A"
    assert str(sd["port"]) == env_of(services["eddy-worker"])["EDDY_WEB_PORT"]
    prometheus = services["prometheus"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    assert "./infra/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prometheus["volumes"]


def grafana_mount(services: Mapping[str, Any], source: str) -> str:
    for spec in services["grafana"]["volumes"]:
        src, target, *_ = spec.split(":")
        if src == source:
            return target  # type: ignore[no-any-return]
    raise AssertionError(f"{source} is not mounted into grafana")


def provisioned_datasource() -> dict[str, Any]:
    config = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    (datasource,) = config["datasources"]
    return datasource  # type: ignore[no-any-return]


def test_grafana_provisions_the_datasource_and_dashboard(
    services: dict[str, dict[str, Any]],
) -> None:
    datasource = provisioned_datasource()
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    assert grafana_mount(services, "./infra/grafana/provisioning") == "/etc/grafana/provisioning"
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "eddy.yml").read_text())
    (provider,) = providers["providers"]
    assert provider["options"]["path"] == grafana_mount(services, "./infra/grafana/dashboards")
    home = env_of(services["grafana"])["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/{DASHBOARD.name}"


_PROMQL_WORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_PROMQL_WORDS |= {"and", "or", "unless", "offset", "bool", "inf", "nan"}


def promql_metrics(expr: str) -> set[str]:
    """Metric names in a PromQL expression (functions, labels and ranges removed)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        if expr[match.end() :].lstrip().startswith("(") or match[0].lower() in _PROMQL_WORDS:
            continue  # a function or aggregation, or a keyword
        names.add(match[0])
    return names


def test_promql_metric_extraction() -> None:
    expr = 'histogram_quantile(0.99, sum by (le) (rate(eddy_x_bucket{job="a"}[$__rate_interval])))'
    assert promql_metrics(expr) == {"eddy_x_bucket"}
    ratio = "sum(rate(a_total[5m])) / sum(rate(b_total[5m]))"
    assert promql_metrics(ratio) == {"a_total", "b_total"}


def test_dashboard_queries_only_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    uid = provisioned_datasource()["uid"]
    queried: set[str] = set()
    quantiles: dict[str, set[str]] = {}
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == uid, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource", {"uid": uid})["uid"] == uid, panel["title"]
            expr = target["expr"]
            for name in promql_metrics(expr):
                base = re.sub(r"_(bucket|sum|count)$", "", name)
                metric = base if base in HISTOGRAMS else name
                assert metric in DASHBOARD_METRICS | PROMETHEUS_BUILTINS, (panel["title"], name)
                if metric in HISTOGRAMS:
                    assert name.endswith("_bucket"), f"{name}: quantiles come from buckets"
                    q = re.match(r"histogram_quantile\((0\.\d+)", expr)
                    assert q, expr
                    quantiles.setdefault(metric, set()).add(q[1])
                queried.add(metric)
    assert queried >= DASHBOARD_METRICS, f"no panel for {sorted(DASHBOARD_METRICS - queried)}"
    assert quantiles == {h: {"0.5", "0.99"} for h in HISTOGRAMS}
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_readme_production_section_follows_quick_start() -> None:
    readme = (ROOT / "README.md").read_text()
    assert readme.index("## Quick start") < readme.index("## Production (docker compose)")
    section = readme.split("## Production (docker compose)", 1)[1].split("\n## ", 1)[0]
    for needed in ("REDIS_PASSWORD", "docker compose up -d", "--scale eddy-worker=", "redis-cli"):
        assert needed in section, needed
    for profile in PROFILES:
        assert f"--profile {profile}" in section, profile
