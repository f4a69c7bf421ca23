"""The API clients of a chaos run: threads that submit a planned mix of emails over HTTP.

The plan (built up front from a seed) numbers every email; its recipient address carries the
number and what the SMTP sink will answer (`u<n>@`, `defer-<n>@`, `fail-<n>@`), so the checks
know what each email must end as. A client behaves as a good one does: a request with an
Idempotency-Key is retried with the same key after a connection error or a 5xx; one without a
key is retried only after a 503 (the server says nothing was changed).
"""

import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import requests

from chaos.sink import DEFER_PREFIX, FAIL_PREFIX

DOMAIN = "chaos.example.com"
TEMPLATE_SLUG = "chaos"
# How long one request is retried before the client gives up on it.
GIVE_UP_SECONDS = 120.0
RETRY_PAUSE_SECONDS = 0.5


def address(number: int, kind: str) -> str:
    """The recipient of email number `number` that the sink answers as `kind` says."""
    prefix = {"ok": "u", "defer": DEFER_PREFIX, "fail": FAIL_PREFIX}[kind]
    return f"{prefix}{number}@{DOMAIN}"


@dataclass
class Submission:
    """One API request of the plan: a single email or a batch, maybe scheduled, maybe keyed."""

    index: int
    kind: str  # "single" or "batch"
    numbers: list[int]
    outcomes: list[str]  # "ok" / "defer" / "fail" per number
    delay_seconds: float | None
    idempotency_key: str | None
    # Filled in by the client:
    send_at: datetime | None = None
    status: int | None = None
    returned_id: str | None = None
    returned_count: int = 0
    given_up: str = ""
    # Every answer's status in order (0: no answer), e.g. [503, 202].
    history: list[int] = field(default_factory=list)


@dataclass
class Answer:
    """One HTTP exchange: when it started and ended, and its status (0: no answer)."""

    started: float
    ended: float
    status: int
    keyed: bool
    error: str = ""


def plan(
    total: int,
    *,
    seed: int,
    batch_share: float = 0.45,
    scheduled_share: float = 0.2,
    keyed_share: float = 0.5,
    defer_share: float = 0.03,
    fail_share: float = 0.01,
    batch_sizes: tuple[int, int] = (5, 40),
    delay_seconds: tuple[float, float] = (2.0, 6.0),
) -> list[Submission]:
    """A mixed list of submissions adding up to exactly `total` emails."""
    rng = random.Random(seed)
    submissions: list[Submission] = []
    number = 0
    while number < total:
        batch = rng.random() < batch_share
        size = min(rng.randint(*batch_sizes) if batch else 1, total - number)
        numbers = list(range(number, number + size))
        number += size
        outcomes = []
        for _ in numbers:
            draw = rng.random()
            outcomes.append(
                "fail"
                if draw < fail_share
                else "defer"
                if draw < fail_share + defer_share
                else "ok"
            )
        submissions.append(
            Submission(
                index=len(submissions),
                kind="batch" if batch else "single",
                numbers=numbers,
                outcomes=outcomes,
                delay_seconds=(
                    rng.uniform(*delay_seconds) if rng.random() < scheduled_share else None
                ),
                idempotency_key=uuid.UUID(int=rng.getrandbits(128)).hex
                if rng.random() < keyed_share
                else None,
            )
        )
    return submissions


def _body(submission: Submission) -> dict:
    body: dict = {}
    if submission.send_at is not None:
        body["send_at"] = submission.send_at.isoformat()
    if submission.kind == "single":
        [number], [kind] = submission.numbers, submission.outcomes
        body.update(
            to=[address(number, kind)],
            subject=f"Chaos {number}",
            text=f"Chaos email number {number}.",
            metadata={"number": number},
        )
        return body
    body.update(
        template=TEMPLATE_SLUG,
        context={"run": "chaos"},
        recipients=[
            {"to": [address(number, kind)], "context": {"number": number}}
            for number, kind in zip(submission.numbers, submission.outcomes, strict=True)
        ],
    )
    return body


@dataclass
class ApiClients:
    """Threads that share the plan's submissions and send them, recording every answer."""

    base_url: str
    api_key: str
    submissions: list[Submission]
    threads: int = 4
    # Spread the submissions evenly over this many seconds (0: as fast as the API answers), so
    # that the faults land while the clients are still submitting, whatever the machine's speed.
    pace_seconds: float = 0.0
    answers: list[Answer] = field(default_factory=list)
    _next: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)
    finished_at: float | None = None
    _began: float = 0.0

    def start(self) -> None:
        """Start the client threads."""
        self._began = time.monotonic()
        for index in range(self.threads):
            thread = threading.Thread(target=self._run, name=f"api-client-{index}", daemon=True)
            thread.start()
            self._workers.append(thread)

    @property
    def submitting(self) -> bool:
        """Whether a client thread is still sending."""
        return any(thread.is_alive() for thread in self._workers)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for every submission to be answered (or given up); True when all threads ended."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._workers:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        done = not any(thread.is_alive() for thread in self._workers)
        if done and self.finished_at is None:
            self.finished_at = time.time()
        return done

    def _take(self) -> Submission | None:
        with self._lock:
            if self._next >= len(self.submissions):
                return None
            submission = self.submissions[self._next]
            self._next += 1
            return submission

    def _run(self) -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {self.api_key}"
        while (submission := self._take()) is not None:
            if self.pace_seconds:
                due = self._began + self.pace_seconds * submission.index / len(self.submissions)
                time.sleep(max(0.0, due - time.monotonic()))
            self._submit(session, submission)

    def _submit(self, session: requests.Session, submission: Submission) -> None:
        if submission.delay_seconds is not None:
            submission.send_at = datetime.now(UTC) + timedelta(seconds=submission.delay_seconds)
        path = "/api/v1/emails/" if submission.kind == "single" else "/api/v1/batches/"
        body = _body(submission)
        headers = {}
        if submission.idempotency_key:
            headers["Idempotency-Key"] = submission.idempotency_key
        keyed = submission.idempotency_key is not None
        give_up_at = time.monotonic() + GIVE_UP_SECONDS
        while True:
            started = time.time()
            try:
                response = session.post(
                    self.base_url + path, json=body, headers=headers, timeout=30
                )
            except requests.RequestException as exc:
                self._record(Answer(started, time.time(), 0, keyed, type(exc).__name__))
                submission.history.append(0)
                # Without a key, a retry could create the emails twice: the answer is unknown.
                if not keyed:
                    submission.given_up = f"no answer ({type(exc).__name__}), no key to retry"
                    return
            else:
                status = response.status_code
                self._record(Answer(started, time.time(), status, keyed))
                submission.history.append(status)
                if 200 <= status < 300:
                    data = response.json()
                    submission.status = status
                    submission.returned_id = data["id"]
                    submission.returned_count = data.get("count", 1)
                    return
                retry = status == 503 or (keyed and (status >= 500 or status == 409))
                if not retry:
                    submission.status = status
                    submission.given_up = f"answered {status}: {response.text[:300]}"
                    return
            if time.monotonic() > give_up_at:
                submission.given_up = f"still failing after {GIVE_UP_SECONDS:.0f} s"
                return
            time.sleep(RETRY_PAUSE_SECONDS)

    def _record(self, answer: Answer) -> None:
        with self._lock:
            self.answers.append(answer)
