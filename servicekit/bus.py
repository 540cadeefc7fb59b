"""NATS JetStream: the connection, stream set-up and durable pull consumers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from servicekit.logging import get_logger
from servicekit.natsauth import inbox_prefix, without_credentials
from servicekit.tracing import current_trace_headers

log = get_logger(__name__)

DEADLETTER_STREAM = "CRM_DEADLETTER"
DEADLETTER_SUBJECTS = ["crm.ingest.deadletter", "crm.deadletter.>"]


@dataclass
class StreamSpec:
    name: str
    subjects: list[str]
    work_queue: bool = False
    max_age_s: float = 7 * 86_400
    description: str = ""


class Bus:
    """One NATS connection per process, reconnecting forever (streams are re-ensured on reconnect).

    ``generation`` counts (re)connections. Consumers do not rebuild their pull subscription on every
    reconnect: a rebuilt subscription strands what the server already routed to the old one's pull
    request until ack_wait (nats-py #933). They rebuild it when it stalls (see ``DurableConsumer``).
    """

    def __init__(
        self,
        url: str,
        *,
        name: str,
        stream_replicas: int = 1,
        duplicate_window_s: int = 120,
        user: str | None = None,
        password: str | None = None,
        tls_ca_file: str | None = None,
    ):
        self.url = url
        self.user = user
        self._password = password
        self.tls_ca_file = tls_ca_file
        self.name = name
        self.stream_replicas = stream_replicas
        self.duplicate_window_s = duplicate_window_s
        self.nc: NATS | None = None
        self.js: JetStreamContext | None = None
        self.generation = 0
        self._streams: list[StreamSpec] = []
        self._connect_task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self.nc is not None and self.nc.is_connected

    def jetstream(self) -> JetStreamContext | None:
        return self.js if self.connected else None

    def add_streams(self, *specs: StreamSpec) -> None:
        self._streams.extend(specs)

    async def start(self) -> None:
        """Connect in the background: a service starts (and serves) while NATS is still down."""
        self._connect_task = asyncio.create_task(self._connect_until_done())

    async def wait_connected(self, timeout: float = 10.0) -> None:
        async def _wait() -> None:
            while not self.connected or self._connect_task is None or not self._connect_task.done():
                await asyncio.sleep(0.05)

        await asyncio.wait_for(_wait(), timeout)

    async def _connect_until_done(self) -> None:
        delay = 0.2
        shown = without_credentials(self.url)
        credentials: dict[str, Any] = {}
        if self.user:
            # Replies (JetStream answers, pulled messages) come on this user's own prefix: the server lets no
            # other user subscribe there (servicekit.natsauth).
            credentials = {"user": self.user, "password": self._password or "", "inbox_prefix": inbox_prefix(self.user)}
        if self.tls_ca_file:
            credentials["tls"] = ssl.create_default_context(cafile=self.tls_ca_file)
        while True:
            try:
                self.nc = await nats.connect(
                    servers=self.url.split(","),
                    name=self.name,
                    **credentials,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    connect_timeout=2,
                    allow_reconnect=True,
                    reconnected_cb=self._on_reconnected,
                    disconnected_cb=self._on_disconnected,
                    error_cb=self._on_error,
                    pending_size=64 * 1024 * 1024,
                    drain_timeout=5,
                )
                self.js = self.nc.jetstream(timeout=5)
                await self.ensure_streams()
                self.generation += 1
                log.info("nats_connected", url=shown)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("nats_connect_failed", url=shown, error=repr(exc))
                if self.nc is not None:
                    with contextlib.suppress(Exception):
                        await self.nc.close()
                    self.nc = None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def ensure_streams(self) -> None:
        assert self.js is not None
        for spec in [StreamSpec(DEADLETTER_STREAM, DEADLETTER_SUBJECTS, max_age_s=30 * 86_400), *self._streams]:
            config = StreamConfig(
                name=spec.name,
                subjects=spec.subjects,
                description=spec.description or None,
                storage=StorageType.FILE,
                retention=RetentionPolicy.WORK_QUEUE if spec.work_queue else RetentionPolicy.LIMITS,
                num_replicas=self.stream_replicas,
                duplicate_window=float(self.duplicate_window_s),
                max_age=spec.max_age_s,
                # The outbox relay stores a backlog as atomic batches: one disk sync each instead of one per
                # message (servers before 2.12 ignore it; the relay then sends one by one).
                allow_atomic=True,
            )
            try:
                await self.js.stream_info(spec.name)
                await self.js.update_stream(config)
            except NotFoundError:
                await self.js.add_stream(config)

    async def _on_reconnected(self) -> None:
        self.generation += 1
        log.info("nats_reconnected", url=without_credentials(self.url))
        with contextlib.suppress(Exception):
            await self.ensure_streams()

    async def _on_disconnected(self) -> None:
        log.warning("nats_disconnected", url=without_credentials(self.url))

    async def _on_error(self, exc: Exception) -> None:
        log.debug("nats_error", error=repr(exc))

    async def publish(self, subject: str, payload: bytes, *, msg_id: str | None = None) -> None:
        if self.js is None:
            raise ConnectionError("not connected to NATS")
        # The trace context of the request or event being handled travels on (servicekit.tracing).
        headers = current_trace_headers()
        if msg_id:
            headers["Nats-Msg-Id"] = msg_id
        await self.js.publish(subject, payload, headers=headers or None)

    async def dead_letter(
        self,
        subject: str,
        *,
        reason: str,
        payload: bytes,
        origin: str,
        headers: dict[str, str] | None = None,
        msg_id: str | None = None,
    ) -> None:
        """Park a message that can never succeed, with the reason and the original payload."""
        try:
            original: Any = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            original = payload.decode("utf-8", errors="replace")
        body = json.dumps(
            {"reason": reason, "origin": origin, "consumer": self.name, "headers": headers or {}, "payload": original}
        ).encode()
        await self.publish(subject, body, msg_id=f"dl-{msg_id}" if msg_id else None)

    async def close(self) -> None:
        if self._connect_task is not None:
            self._connect_task.cancel()
            with contextlib.suppress(BaseException):
                await self._connect_task
        if self.nc is not None:
            # No drain: consumers have already stopped between batches (what they fetched is acked or
            # nak'ed), and the outbox marks nothing sent without JetStream's ack, so nothing rides on
            # a drain, which waits out its timeout on an idle pull subscription (seconds per shutdown).
            with contextlib.suppress(Exception):
                await self.nc.close()


class PermanentError(Exception):
    """The message can never be processed: dead-letter it instead of retrying."""


BatchHandler = Callable[[list[Msg]], Awaitable[None]]


@dataclass
class DurableConsumer:
    """A durable pull consumer that survives server restarts and never drops a message.

    ``handle_batch`` gets the fetched messages and must ack, nak or term each one. If fetches come back
    empty while the server says messages are pending for us (the pull subscription died with a server
    restart, nats-py #504), the subscription is rebuilt; a test kills and restarts nats-server under it.

    Trace context travels in each message's ``traceparent``/``tracestate`` headers: a batch has one per message,
    so it is the handler that makes each current while it handles that message (``EventInbox`` does, per event;
    another handler wraps its per-message work in ``servicekit.tracing.consuming(message_trace_headers(...))``).
    """

    bus: Bus
    stream: str
    durable: str
    filter_subjects: Sequence[str]
    handle_batch: BatchHandler
    batch: int = 100
    fetch_timeout_s: float = 0.25
    ack_wait_s: float = 15.0
    max_ack_pending: int = 5000
    deliver_policy: DeliverPolicy = DeliverPolicy.ALL
    _sub: Any = field(default=None, init=False)
    _stopping: bool = field(default=False, init=False)
    _awaiting_stream: bool = field(default=False, init=False)

    stall_check_s: float = 5.0
    _last_progress: float = field(default=0.0, init=False)
    # Batches handled at the same time. Above 1, the next batch is fetched and handled while the previous one is
    # still being written, so one batch's database round trips overlap the next one's fetch and parsing. Each
    # handler still acks its own messages after its own commit; on stop every batch in hand is finished.
    in_flight: int = 1
    _handling: set[asyncio.Future[None]] = field(default_factory=set, init=False)

    def _config(self) -> ConsumerConfig:
        subjects = list(self.filter_subjects)
        return ConsumerConfig(
            durable_name=self.durable,
            deliver_policy=self.deliver_policy,
            ack_wait=self.ack_wait_s,
            max_deliver=-1,
            max_ack_pending=self.max_ack_pending,
            filter_subject=subjects[0] if len(subjects) == 1 else None,
            filter_subjects=subjects if len(subjects) > 1 else None,
        )

    async def _subscribe(self) -> Any:
        js = self.bus.jetstream()
        if js is None:
            return None
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
        try:
            info = await js.consumer_info(self.stream, self.durable)
        except NotFoundError:
            try:
                await js.add_consumer(self.stream, config=self._config())
            except NotFoundError:
                # The stream belongs to another service that has not started yet (the gateway makes CRM_STAFF):
                # wait for it quietly instead of logging an error every few seconds.
                if not self._awaiting_stream:
                    log.info("consumer_awaiting_stream", stream=self.stream, durable=self.durable)
                self._awaiting_stream = True
                return None
        else:
            held = info.config.filter_subjects or ([info.config.filter_subject] if info.config.filter_subject else [])
            if sorted(held) != sorted(self.filter_subjects):
                # A new release consumes more (or fewer) subjects: the durable keeps its place in the stream and
                # takes the new filter from there on (the server updates a durable created with the same name).
                log.info("consumer_filter_updated", stream=self.stream, durable=self.durable,
                         was=sorted(held), now=sorted(self.filter_subjects))  # fmt: skip
                await js.add_consumer(self.stream, config=self._config())
        self._awaiting_stream = False
        self._sub = await js.pull_subscribe_bind(self.durable, stream=self.stream)
        log.info("consumer_subscribed", stream=self.stream, durable=self.durable)
        return self._sub

    async def _check_stalled(self) -> None:
        """Fetches came back empty for a while: if the server holds messages for us, the subscription
        is dead (as after some server restarts) and is rebuilt."""
        now = asyncio.get_running_loop().time()
        if now - self._last_progress < self.stall_check_s:
            return
        self._last_progress = now
        js = self.bus.jetstream()
        if js is None:
            return
        try:
            info = await js.consumer_info(self.stream, self.durable)
        except NotFoundError:
            self._sub = None
            return
        if info.num_pending:
            log.warning("consumer_stalled", stream=self.stream, durable=self.durable, pending=info.num_pending)
            self._sub = None

    def stop(self) -> None:
        """Finish the batch in hand and return (its messages are acked or nak'ed, none stranded)."""
        self._stopping = True

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            if self._handling:
                await asyncio.wait(self._handling)
                for task in self._handling:
                    if not task.cancelled() and task.exception() is not None:
                        log.warning("consumer_error", stream=self.stream, durable=self.durable,
                                    error=repr(task.exception()))  # fmt: skip
                self._handling.clear()

    async def _handle(self, msgs: list[Msg]) -> None:
        if self.in_flight <= 1:
            await self.handle_batch(msgs)
            return
        while len(self._handling) >= self.in_flight:
            await asyncio.wait(self._handling, return_when=asyncio.FIRST_COMPLETED)
            for task in [t for t in self._handling if t.done()]:
                self._handling.discard(task)
                task.result()  # a handler's error is the loop's error, as with one batch at a time
        self._handling.add(asyncio.ensure_future(self.handle_batch(msgs)))

    async def _run(self) -> None:
        backoff = 0.2
        while not self._stopping:
            try:
                if self._sub is None and await self._subscribe() is None:
                    await asyncio.sleep(0.2)
                    continue
                try:
                    msgs = await self._sub.fetch(self.batch, timeout=self.fetch_timeout_s)
                except (TimeoutError, nats.errors.TimeoutError):
                    await self._check_stalled()
                    continue
                await self._handle(msgs)
                self._last_progress = asyncio.get_running_loop().time()
                backoff = 0.2
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("consumer_error", stream=self.stream, durable=self.durable, error=repr(exc))
                self._sub = None
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
