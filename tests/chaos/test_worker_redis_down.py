"""What the chaos run found: a worker (re)started while Redis was restarting exited at once
(`rqworker` exits with status 1 on a connection error at start-up), so under a supervisor it
would restart in a loop until Redis came back. It now waits for Redis."""

import redis

from chaos.services import PrivateRedis
from tests.live import live_env, process_logs, processes, wait_until


def test_worker_started_while_redis_is_down_waits_and_registers_once_it_is_back(tmp_path):
    """The worker stays up while Redis refuses connections, then registers when Redis starts."""
    directory = tmp_path / "redis"
    directory.mkdir()
    server = PrivateRedis(directory)  # not started yet: its port refuses connections
    env = live_env(REDIS_URL=server.url)
    with processes([["rqworker", "high", "default", "low"]], env, tmp_path) as [worker]:
        wait_until(
            lambda: "Redis down at start" in process_logs(tmp_path) or worker.poll() is not None,
            timeout=60,
            what="the worker to try Redis",
            logs=tmp_path,
        )
        assert worker.poll() is None, process_logs(tmp_path)
        server.start()
        try:
            client = redis.Redis.from_url(server.url)
            wait_until(
                lambda: bool(client.smembers("rq:workers")),
                timeout=30,
                what="the worker to register",
                logs=tmp_path,
            )
            assert worker.poll() is None
        finally:
            worker.terminate()
            worker.wait(timeout=10)
            server.stop()
