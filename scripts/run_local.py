"""`make run`: migrate, load templates, then run web + worker + scheduler + event consumer + SMTP
submission server until Ctrl-C.

Prints the URLs, an admin login and a ready API key. State that must survive restarts (the admin
password, the API key) is kept in .run/, which git ignores.
"""

import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUN_DIR = ROOT / ".run"
PYTHON = sys.executable
HOST = os.environ.get("HOST", "127.0.0.1")
PORT = os.environ.get("PORT", "8000")
SMTPD_PORT = os.environ.get("MAILQUEUE_SMTPD_PORT", "2525")
# Local use: the submission server listens on 127.0.0.1 and takes AUTH without TLS.
os.environ.setdefault("MAILQUEUE_SMTPD_ALLOW_PLAIN_AUTH", "1")


def manage(*args: str, capture: bool = False) -> str:
    """Run a management command, failing loudly."""
    result = subprocess.run(
        [PYTHON, "manage.py", *args],
        cwd=ROOT,
        check=True,
        text=True,
        stdout=subprocess.PIPE if capture else None,
    )
    return result.stdout or ""


def setup() -> tuple[str, str]:
    """Migrate, load templates, make sure an admin user and an API key exist."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    manage("migrate", "--no-input", "-v", "0")
    manage("load_default_templates")
    manage("load_event_rules", "--client", "local")
    django.setup()
    from django.contrib.auth import get_user_model

    from mailqueue.services import api_key_authenticate, api_key_create

    RUN_DIR.mkdir(exist_ok=True)
    password_file = RUN_DIR / "admin-password"
    user_model = get_user_model()
    if not user_model.objects.filter(username="admin").exists():
        password = secrets.token_urlsafe(12)
        user_model.objects.create_superuser("admin", "admin@localhost", password)
        password_file.write_text(password)
    password = password_file.read_text().strip() if password_file.exists() else "(unchanged)"

    key_file = RUN_DIR / "api-key"
    key = key_file.read_text().strip() if key_file.exists() else ""
    if not key or api_key_authenticate(token=key) is None:
        key = api_key_create(
            client_name="local", scopes=["send", "read", "templates"], name="make run"
        ).plaintext
        key_file.write_text(key)
    return password, key


def wait_for_web(url: str, timeout: float = 30) -> bool:
    """Poll the health endpoint until the web process answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - local URL
                return True
        except urllib.error.HTTPError:
            return True  # it answered (503 means Redis or the DB is unhappy; health says which)
        except OSError:
            time.sleep(0.3)
    return False


def _die_with_parent() -> None:
    """Linux: have the kernel send SIGTERM to a child if this launcher dies, even by SIGKILL."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def main() -> int:
    """Start the three processes and stop them together."""
    os.chdir(ROOT)
    password, key = setup()
    from mailqueue.models import Priority  # Django is set up by now

    commands = {
        "web": [PYTHON, "manage.py", "runserver", f"{HOST}:{PORT}"],
        # One worker drains every priority's queue, highest first.
        "worker": [PYTHON, "manage.py", "rqworker", *Priority.values],
        "scheduler": [PYTHON, "manage.py", "rqscheduler"],
        # Events XADDed to mailqueue:events (client `local`, rules of fixtures/event_rules.json).
        "consumer": [PYTHON, "manage.py", "consume_events"],
        # SMTP submission on 127.0.0.1 only, where AUTH without TLS is acceptable.
        "smtpd": [PYTHON, "manage.py", "smtpd", "--host", "127.0.0.1", "--port", SMTPD_PORT],
    }
    processes = {
        name: subprocess.Popen(
            command, cwd=ROOT, start_new_session=True, preexec_fn=_die_with_parent
        )
        for name, command in commands.items()
    }

    def stop(*_args) -> None:
        for process in processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda *a: (stop(), sys.exit(0)))
    base = f"http://{HOST}:{PORT}"
    if not wait_for_web(f"{base}/health/"):
        print("The web process did not start; see the log above.", file=sys.stderr)
        stop()
        return 1
    print(
        f"""
  Mailqueue is running.
    API            {base}/api/v1/        (docs: {base}/api/docs/)
    Admin          {base}/admin/         user: admin  password: {password}
    Capture inbox  {base}/admin/mailqueue/capturedmessage/
    Queues         {base}/django-rq/
    Health         {base}/health/
    SMTP           {HOST}:{SMTPD_PORT}       (AUTH: any user name, the API key as password)
    API key        {key}

  Try it:
    curl -s -X POST {base}/api/v1/emails/ -H "Authorization: Bearer {key}" \\
      -H "Content-Type: application/json" \\
      -d '{{"to": "ada@example.com", "template": "welcome", "context": {{"name": "Ada", "company_name": "Acme", "login_url": "https://example.com/login"}}}}'

  Or publish an event (the consumer turns it into the same email):
    redis-cli XADD mailqueue:events '*' event '{{"id": "1", "type": "user.registered", "client": "local", "data": {{"email": "ada@example.com", "name": "Ada", "company_name": "Acme", "login_url": "https://example.com/login"}}}}'

  Or send over SMTP (the API key is the password):
    swaks --server {HOST}:{SMTPD_PORT} --auth PLAIN --auth-user local --auth-password {key} \\
      --from noreply@localhost --to ada@example.com --header "Subject: Hello over SMTP"

  Ctrl-C stops web, worker, scheduler, consumer and the SMTP server.
""",
        flush=True,
    )
    try:
        while True:
            for name, process in processes.items():
                if process.poll() is not None:
                    print(f"{name} exited with {process.returncode}; stopping.", file=sys.stderr)
                    stop()
                    return process.returncode or 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        stop()
        return 0


if __name__ == "__main__":
    sys.exit(main())
