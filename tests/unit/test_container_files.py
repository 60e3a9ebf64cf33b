"""The container files agree with the code: variables, ports, routes, health checks.

No Docker engine runs here; `.ci/run` also has `docker-compose config -q` parse the
compose file and hadolint lint the Dockerfile. This checks what those cannot: that the
stack configures taskflow with settings it accepts and probes routes it serves.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from aiohttp import web

from taskflow.app import create_app
from taskflow.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict[str, Any]:
    """docker-compose.yml, parsed."""
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def routes() -> set[str]:
    """The GET routes the application serves."""
    app = create_app(Settings())
    return {
        r.resource.canonical
        for r in app.router.routes()
        if r.method == "GET"
        and r.resource is not None
        and not isinstance(r.resource, web.StaticResource)
    }


def taskflow_env() -> dict[str, str]:
    """The taskflow service's environment as the container sees it with an empty shell.

    A variable listed without a value is passed through from the shell running compose,
    so with nothing set there it is absent.
    """
    env = compose()["services"]["taskflow"]["environment"]
    return {name: str(value) for name, value in env.items() if value is not None}


def test_compose_configures_taskflow_with_valid_settings() -> None:
    services = compose()["services"]
    settings = Settings.from_env(taskflow_env())  # raises on any bad value
    assert settings.host == "0.0.0.0"  # reachable from the host and from Prometheus

    database = urlsplit(settings.database_url or "")
    postgres = services["postgres"]["environment"]
    assert database.hostname == "postgres"
    assert database.username == postgres["POSTGRES_USER"]
    assert database.password == postgres["POSTGRES_PASSWORD"]
    assert database.path == f"/{postgres['POSTGRES_DB']}"
    assert urlsplit(settings.amqp_url).hostname == "rabbitmq"

    config_source = (ROOT / "taskflow" / "config.py").read_text()
    for name in services["taskflow"]["environment"]:
        assert f'"{name}"' in config_source, f"{name} is not a taskflow setting"


def test_compose_ports_and_dependencies_match_the_service() -> None:
    services = compose()["services"]
    port = Settings.from_env(taskflow_env()).port
    (published,) = services["taskflow"]["ports"]
    host_part, container_port = published.rsplit(":", 1)
    assert int(container_port) == port
    assert host_part == "127.0.0.1:8000-8002"  # one host port per replica, for --scale 3
    for dependency in ("postgres", "rabbitmq"):
        assert services["taskflow"]["depends_on"][dependency]["condition"] == "service_healthy"
        assert services[dependency]["healthcheck"]["test"]
    grace = services["taskflow"]["stop_grace_period"]
    assert float(grace.removesuffix("s")) > Settings().shutdown_grace_s + Settings().work_max_s


def test_prometheus_scrapes_every_replica_on_the_metrics_route() -> None:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "taskflow"]
    assert job["metrics_path"] in routes()
    (discovery,) = job["dns_sd_configs"]
    assert discovery["names"] == ["taskflow"]  # the compose service: one record per replica
    assert discovery["port"] == Settings.from_env(taskflow_env()).port
    volume = compose()["services"]["prometheus"]["volumes"][0]
    assert volume.startswith("./deploy/prometheus.yml:/etc/prometheus/prometheus.yml")


def test_prometheus_sends_the_metrics_token_that_taskflow_expects() -> None:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "taskflow"]
    assert job["authorization"]["type"] == "Bearer"
    path = job["authorization"]["credentials_file"]
    volumes = compose()["services"]["prometheus"]["volumes"]
    (source,) = [v.split(":")[0] for v in volumes if v.split(":")[1] == path]
    token = (ROOT / source).read_text().strip()
    assert Settings.from_env(taskflow_env()).metrics_token == token


def test_dockerfile_runs_taskflow_unprivileged_and_probes_liveness() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    healthcheck = re.search(r"^HEALTHCHECK .*?CMD (.+)$", dockerfile, re.MULTILINE | re.DOTALL)
    assert healthcheck is not None
    probed = re.findall(r"/health/\w+", healthcheck.group(1))
    assert probed == ["/health/live"]
    assert probed[0] in routes()
    assert re.search(r"^CMD \[\"taskflow\", \"serve\"\]$", dockerfile, re.MULTILINE)
    assert re.search(r"^USER 10001:10001$", dockerfile, re.MULTILINE)
    assert "TASKFLOW_HOST=0.0.0.0" in dockerfile
    assert re.search(rf"^EXPOSE {Settings().port}$", dockerfile, re.MULTILINE)


def test_prometheus_loads_the_alerting_rules() -> None:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]  # relative to prometheus.yml
    volumes = compose()["services"]["prometheus"]["volumes"]
    assert "./deploy/alerts.yml:/etc/prometheus/alerts.yml:ro" in volumes
    rules = yaml.safe_load((ROOT / "deploy" / "alerts.yml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    assert alerts == {
        "TaskflowNoInstanceUp",
        "TaskflowBacklogStale",
        "TaskflowDeadLettersRising",
        "TaskflowFencedWritesRising",
        "TaskflowLeaseRecoveriesRising",
        "TaskflowEventBusRestarting",
        "TaskflowDatabaseUnreachable",
    }


def test_taskflow_services_can_be_scaled() -> None:
    services = compose()["services"]
    for name in ("taskflow", "taskflow-cluster"):
        service = services[name]
        assert "container_name" not in service, name  # one fixed name: one replica only
        (published,) = service["ports"]
        assert re.fullmatch(r"127\.0\.0\.1:\d+-\d+:8000", published), name  # a host-port range


def test_the_cluster_profile_runs_three_rabbitmq_nodes_and_taskflow_on_quorum_queues() -> None:
    services = compose()["services"]
    conf = (ROOT / "deploy" / "rabbitmq" / "cluster.conf").read_text()
    assert "cluster_formation.peer_discovery_backend = classic_config" in conf
    peers = re.findall(r"^cluster_formation\.classic_config\.nodes\.\d+ = (\S+)$", conf, re.M)
    nodes = [f"rabbitmq-{i}" for i in (1, 2, 3)]
    assert peers == [f"rabbit@{node}" for node in nodes]

    cookies = set()
    for node in nodes:
        service = services[node]
        assert service["profiles"] == ["cluster"]
        assert service["hostname"] == node  # the node name in the peer list
        assert "rabbitmq-cluster" in service["networks"]["default"]["aliases"]
        assert any(
            v.endswith(":/etc/rabbitmq/conf.d/20-cluster.conf:ro") for v in service["volumes"]
        )
        assert any(v.endswith(":/var/lib/rabbitmq") for v in service["volumes"])  # its own data
        cookies.add(service["environment"]["ERLANG_COOKIE"])
        assert "$$ERLANG_COOKIE" in " ".join(service["entrypoint"])
    assert len(cookies) == 1  # one shared Erlang cookie

    cluster = services["taskflow-cluster"]
    assert cluster["profiles"] == ["cluster"]
    env = {k: str(v) for k, v in cluster["environment"].items() if v is not None}
    settings = Settings.from_env(env)
    assert settings.amqp_queue_type == "quorum"
    assert urlsplit(settings.amqp_url).hostname == "rabbitmq-cluster"
    assert settings.database_url == Settings.from_env(taskflow_env()).database_url
    for node in nodes:
        assert cluster["depends_on"][node]["condition"] == "service_healthy"
    assert "taskflow" in cluster["networks"]["default"]["aliases"]  # scraped as `taskflow`
    # Without the profile, nothing of the cluster runs.
    assert all("profiles" not in services[name] for name in ("postgres", "rabbitmq", "taskflow"))
