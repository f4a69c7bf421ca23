"""The RQ worker class Mailqueue runs (settings.RQ['WORKER_CLASS'])."""

from django.db import close_old_connections, connection
from rq.job import Job
from rq.queue import Queue
from rq.worker import SimpleWorker

from mailqueue.priorities import HIGH, WEBHOOKS
from mailqueue.providers import close_all
from mailqueue.services.delivery import send_pool_shutdown


class MailqueueWorker(SimpleWorker):
    """Runs jobs in the worker process itself instead of forking one process per job.

    Forking per job would throw away the provider connections (SMTP sessions, HTTP keep-alive,
    boto3 clients) that the provider registry keeps open across emails, and costs milliseconds
    per job.
    """

    def __init__(self, queues, *args, **kwargs) -> None:
        """RQ's worker, also serving the `webhooks` queue right after `high` when it serves `high`.

        So `rqworker high default low` stays the command, webhook deliveries never wait behind
        a flood of `default` or `low` email, and never delay `high` email.
        """
        super().__init__(queues, *args, **kwargs)
        names = [queue.name for queue in self.queues]
        if HIGH in names and WEBHOOKS not in names:
            webhooks = self.queue_class(
                name=WEBHOOKS,
                connection=self.connection,
                job_class=self.job_class,
                serializer=self.serializer,
                death_penalty_class=self.death_penalty_class,
            )
            self.queues.insert(names.index(HIGH) + 1, webhooks)
            self._ordered_queues = self.queues[:]

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
