"""The RQ worker class Mailqueue runs (settings.RQ['WORKER_CLASS'])."""

from django.db import close_old_connections, connection
from rq.job import Job
from rq.queue import Queue
from rq.worker import SimpleWorker

from mailqueue.providers import close_all
from mailqueue.services.delivery import send_pool_shutdown


class MailqueueWorker(SimpleWorker):
    """Runs jobs in the worker process itself instead of forking one process per job.

    Forking per job would throw away the provider connections (SMTP sessions, HTTP keep-alive,
    boto3 clients) that the provider registry keeps open across emails, and costs milliseconds
    per job.
    """

    def execute_job(self, job: Job, queue: Queue) -> None:
        """Drop a dead or stale database connection before each job, as Django does per request."""
        if not connection.in_atomic_block:
            close_old_connections()
        return super().execute_job(job, queue)

    def unsubscribe(self) -> None:
        """Stop the pubsub thread before unsubscribing, so the reply wakes it up to exit."""
        if self.pubsub_thread:
            # RQ unsubscribes first, so the thread can wake on the reply and go back to waiting
            # (up to 60 s) before it sees the stop flag; teardown then blocks a full second on
            # join(), often, at the end of every burst run and every shutdown.
            self.pubsub_thread.stop()
        super().unsubscribe()

    def teardown(self) -> None:
        """Stop the send threads and close provider connections on shutdown."""
        send_pool_shutdown()
        close_all()
        super().teardown()
