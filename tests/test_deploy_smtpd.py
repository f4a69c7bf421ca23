"""The SMTP submission server is part of every way of running Mailqueue: `make run`, compose and
the Kubernetes example, each with its health check."""

from pathlib import Path

import yaml
from django.core.management import get_commands

from mailqueue import conf

ROOT = Path(__file__).resolve().parent.parent
HEALTHCHECK = ["python", "manage.py", "mailqueue_healthcheck", "smtpd"]


def test_compose_runs_smtpd_on_its_port_with_its_health_check():
    """The service runs the `smtpd` command, publishes the default port and checks itself."""
    service = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["smtpd"]
    assert service["command"] == ["smtpd"]
    assert "smtpd" in get_commands()
    port = conf.smtpd_port()
    assert service["ports"] == [f"{port}:{port}"]
    assert service["healthcheck"]["test"] == ["CMD", *HEALTHCHECK]
    assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_k8s_runs_smtpd_with_tls_probes_and_a_service():
    """The Deployment runs `smtpd` with its certificate mounted where the settings point, the
    health check as liveness probe, resources, and a Service in front of the port."""
    documents = list(yaml.safe_load_all((ROOT / "deploy/k8s/smtpd.yaml").read_text()))
    deployment = next(item for item in documents if item["kind"] == "Deployment")
    service = next(item for item in documents if item["kind"] == "Service")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["smtpd"]
    assert container["livenessProbe"]["exec"]["command"] == HEALTHCHECK
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    env = {item["name"]: item["value"] for item in container["env"]}
    (mount,) = container["volumeMounts"]
    assert env["MAILQUEUE_SMTPD_TLS_CERT"].startswith(mount["mountPath"] + "/")
    assert env["MAILQUEUE_SMTPD_TLS_KEY"].startswith(mount["mountPath"] + "/")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["port"] == conf.smtpd_port()


def test_make_run_starts_smtpd():
    """scripts/run_local.py starts the submission server with the other processes."""
    script = (ROOT / "scripts/run_local.py").read_text()
    assert '"smtpd": [PYTHON, "manage.py", "smtpd"' in script
