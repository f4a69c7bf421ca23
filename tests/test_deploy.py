"""docker-compose.yml and deploy/k8s/: with no Docker or cluster here, parse them and check that
their commands, ports and probe paths are ones this code base really answers."""

import os
import re
import secrets
import subprocess
import sys
from io import StringIO
from pathlib import Path

import django_rq
import pytest
import yaml
from django.core.management import call_command, get_commands
from django.urls import resolve

from mailqueue.health import health_live, health_ready

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
WEB_PORT = 8000


def _entrypoint_roles() -> set[str]:
    """The roles docker/entrypoint.sh knows (its `case` labels)."""
    script = (ROOT / "docker" / "entrypoint.sh").read_text()
    return set(re.findall(r"^\s+([a-z]+)\)$", script, flags=re.MULTILINE))


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _k8s() -> dict[tuple[str, str], dict]:
    """Every object of deploy/k8s/ by (kind, name)."""
    objects = {}
    for path in sorted(K8S.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            objects[(document["kind"], document["metadata"]["name"])] = document
    return objects


def _container(deployment: dict) -> dict:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def _url_path(command: list[str]) -> str:
    """The local URL a `python -c` health check opens."""
    (url,) = re.findall(r"http://127\.0\.0\.1:(\d+)(/[^'\"]*)", " ".join(command))
    port, path = url
    assert int(port) == WEB_PORT
    return path


def test_compose_processes_run_known_roles_and_their_health_checks():
    """Each service runs a role of the entrypoint; web checks readiness on the port it publishes;
    the worker and scheduler run mailqueue_healthcheck for their own role."""
    services = _compose()["services"]
    roles = _entrypoint_roles()
    assert {"web", "worker", "scheduler", "migrate"} <= roles
    for name in ("web", "worker", "scheduler", "migrate"):
        assert services[name]["command"] == [name]

    assert services["web"]["ports"] == [f"{WEB_PORT}:{WEB_PORT}"]
    assert resolve(_url_path(services["web"]["healthcheck"]["test"])).func is health_ready
    for role in ("worker", "scheduler"):
        test = services[role]["healthcheck"]["test"]
        assert test == ["CMD", "python", "manage.py", "mailqueue_healthcheck", role]


def test_compose_runs_the_event_consumer_with_its_health_check():
    """The consumer service runs `consume_events` (the entrypoint passes any other word to
    manage.py) and checks itself with `mailqueue_healthcheck consumer`."""
    consumer = _compose()["services"]["consumer"]
    assert consumer["command"] == ["consume_events"]
    assert "consume_events" not in _entrypoint_roles()
    assert consumer["command"][0] in get_commands()
    assert consumer["healthcheck"]["test"] == [
        "CMD",
        "python",
        "manage.py",
        "mailqueue_healthcheck",
        "consumer",
    ]
    assert consumer["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_k8s_runs_web_worker_and_scheduler_with_probes_and_resources():
    """Three Deployments from the one image, each with a liveness probe, requests and limits,
    and a selector that matches its pods; the web Service targets the container's port."""
    objects = _k8s()
    roles = _entrypoint_roles()
    for role in ("web", "worker", "scheduler"):
        deployment = objects[("Deployment", f"mailqueue-{role}")]
        container = _container(deployment)
        assert container["args"] == [role] and role in roles
        assert container["livenessProbe"]
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        assert "memory" in container["resources"]["limits"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert objects[("Deployment", "mailqueue-scheduler")]["spec"]["replicas"] == 1
    assert objects[("Job", "mailqueue-migrate")]["spec"]["template"]["spec"]["containers"][0][
        "args"
    ] == ["migrate"]

    web = _container(objects[("Deployment", "mailqueue-web")])
    assert [port["containerPort"] for port in web["ports"]] == [WEB_PORT]
    service = objects[("Service", "mailqueue-web")]
    assert [port["targetPort"] for port in service["spec"]["ports"]] == [WEB_PORT]


def test_k8s_web_probes_use_live_and_ready():
    """Liveness asks /health/live/ and readiness /health/ready/, on the web port, with a Host
    header ALLOWED_HOSTS accepts (the pod IP would be refused)."""
    web = _container(_k8s()[("Deployment", "mailqueue-web")])
    probes = {kind: web[kind]["httpGet"] for kind in ("livenessProbe", "readinessProbe")}

    assert resolve(probes["livenessProbe"]["path"]).func is health_live
    assert resolve(probes["readinessProbe"]["path"]).func is health_ready
    for probe in probes.values():
        assert probe["port"] == WEB_PORT
        assert {"name": "Host", "value": "localhost"} in probe["httpHeaders"]


@pytest.mark.django_db
def test_k8s_web_probes_answer_200_through_django(client, settings):
    """The probe requests, Host header included, answer 200 from a running web process."""
    settings.ALLOWED_HOSTS = ["mail.example.com", "localhost"]
    web = _container(_k8s()[("Deployment", "mailqueue-web")])

    for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
        probe = web[kind]["httpGet"]
        headers = {header["name"]: header["value"] for header in probe["httpHeaders"]}
        response = client.get(probe["path"], HTTP_HOST=headers["Host"])
        assert response.status_code == 200, kind


def test_k8s_worker_liveness_command_passes_with_a_live_worker():
    """The worker's exec probe is `python manage.py mailqueue_healthcheck worker`, and that
    command passes while a worker of this host is alive."""
    worker_probe = _container(_k8s()[("Deployment", "mailqueue-worker")])["livenessProbe"]
    scheduler_probe = _container(_k8s()[("Deployment", "mailqueue-scheduler")])["livenessProbe"]
    command = worker_probe["exec"]["command"]
    assert command == ["python", "manage.py", "mailqueue_healthcheck", "worker"]
    assert scheduler_probe["exec"]["command"] == [
        "python",
        "manage.py",
        "mailqueue_healthcheck",
        "scheduler",
    ]
    worker = django_rq.get_worker("default")
    worker.register_birth()
    out = StringIO()
    try:
        call_command(*command[2:], stdout=out)
    finally:
        worker.register_death()

    assert "healthy: 1 live worker" in out.getvalue()


@pytest.mark.django_db
def test_k8s_consumer_runs_consume_events_with_its_probe_and_resources():
    """The consumer Deployment runs `consume_events`, with requests, limits, a selector that
    matches its pods and the `mailqueue_healthcheck consumer` liveness probe, which passes
    while a consumer of this host renews its heartbeat."""
    from event_sends.consumer import EventConsumer

    deployment = _k8s()[("Deployment", "mailqueue-consumer")]
    container = _container(deployment)
    assert container["args"] == ["consume_events"]
    assert container["args"][0] in get_commands()
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert "memory" in container["resources"]["limits"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    command = container["livenessProbe"]["exec"]["command"]
    assert command == ["python", "manage.py", "mailqueue_healthcheck", "consumer"]

    consumer = EventConsumer(name="probe-test")
    consumer.step()
    out = StringIO()
    try:
        call_command(*command[2:], stdout=out)
    finally:
        consumer.request_stop()
        consumer.run()

    assert "healthy: 1 live consumer" in out.getvalue()
    with pytest.raises(SystemExit):
        call_command(*command[2:], stdout=StringIO(), stderr=StringIO())


def _deploy_check(**variables: str) -> subprocess.CompletedProcess:
    """`manage.py check --deploy` in a fresh process with only these variables set (besides
    PATH), the way a production container starts."""
    env = {"PATH": os.environ["PATH"], "DJANGO_SETTINGS_MODULE": "config.settings", **variables}
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


# The variables a production deployment sets (README: "Production settings").
PRODUCTION_ENV = {
    "DEBUG": "0",
    "SECRET_KEY": secrets.token_urlsafe(50),
    "ALLOWED_HOSTS": "mail.example.com,localhost",
    "CSRF_TRUSTED_ORIGINS": "https://mail.example.com",
    "SECURE_SSL_REDIRECT": "1",
    "DATABASE_URL": "postgres://mailqueue@db.internal:5432/mailqueue",
    "REDIS_URL": "redis://redis.internal:6379/0",
    "EMAIL_PROVIDERS": "smtp",
    "EMAIL_URL": "smtp+tls://mailer:secret@smtp.example.com:587",
    "MAILQUEUE_PUBLIC_URL": "https://mail.example.com",
}


def test_check_deploy_is_clean_with_the_production_settings():
    """With the documented production variables, `check --deploy` reports nothing at all."""
    result = _deploy_check(**PRODUCTION_ENV)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout, result.stdout + result.stderr
    assert "WARNINGS" not in result.stderr + result.stdout


def test_check_deploy_names_what_a_weaker_setup_misses():
    """The same check fails, naming the setting, without the redirect, with a short secret key
    or with HSTS off: the clean run above is not a check that never warns."""
    weaker = {
        "security.W008": {"SECURE_SSL_REDIRECT": "0"},
        "security.W009": {"SECRET_KEY": "short"},
        "security.W004": {"SECURE_HSTS_SECONDS": "0"},
    }
    for warning, change in weaker.items():
        result = _deploy_check(**{**PRODUCTION_ENV, **change})
        assert result.returncode != 0, warning
        assert warning in result.stderr, result.stderr
