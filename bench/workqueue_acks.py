"""What nats-server spends on each acknowledged message of a work-queue stream: the ceiling of NATS ingest.

NATS ingest consumes ``crm.ingest.interactions`` (a work-queue stream, file storage, the stack's
``sync_interval: always``) and acks each message after its commit; on a work-queue stream an ack removes the
message. This publishes ``--messages`` touchpoint-sized messages to one subject, then consumes them the way the
interactions service does (pull batches of 500, one ack per message) and reports the consume rate and the CPU
nats-server used per message, for four layouts:

- ``work_queue``: the stream as the stack has it (an ack removes the message);
- ``limits``: the same stream with limits retention (acks only move the consumer's ack floor; nothing removed);
- ``limits_purge``: limits retention, and after each batch's acks one purge through its last sequence (what a
  consumer could do instead of the removal per ack, purging only below its ack floor);
- ``work_queue_default_sync``: the stack's stream on a server left at JetStream's default sync (every 2 minutes,
  which loses acknowledged messages on a crash): what the fsyncs cost.

Each layout also reports the publish rate of the same messages sent one per publish (2,000 in flight), and the
run reports how many 600-byte append+fsync rounds the disk does per second: with ``sync_interval: always`` a
message stored on its own and a message removed by its ack each wait for one, so that rate bounds ingest with one
touchpoint per message whatever the service does.

    python -m bench.workqueue_acks [--messages N] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import nats
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType, StreamConfig

from bench.common import remove_scratch, write_results
from bench.timeline import CpuMeter
from servicekit.testing.nats import NatsServer

LAYOUTS = ("work_queue", "limits", "limits_purge", "work_queue_default_sync")
PAYLOAD = b'{"contact_id": "0190f1f4-0000-7000-8000-000000000000", "body": "' + b"x" * 500 + b'"}'


async def consume(layout: str, messages: int) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="touchpoint-acks-"))
    default_sync = None
    if layout == "work_queue_default_sync":
        default_sync = home / "default-sync.conf"
        default_sync.write_text("jetstream {}\n")
    server = NatsServer(home / "nats", config_file=default_sync).start()
    try:
        assert server.process is not None
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        retention = RetentionPolicy.WORK_QUEUE if layout.startswith("work_queue") else RetentionPolicy.LIMITS
        await js.add_stream(StreamConfig(name="ACKS", subjects=["acks.in"], storage=StorageType.FILE,
                                         retention=retention))  # fmt: skip
        pending = []
        publish_started = time.perf_counter()
        for n in range(messages):
            pending.append(await js.publish_async("acks.in", PAYLOAD, headers={"Nats-Msg-Id": f"m{n}"}))
            if len(pending) >= 2000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        published_in = time.perf_counter() - publish_started
        await js.add_consumer("ACKS", ConsumerConfig(durable_name="acks", ack_policy=AckPolicy.EXPLICIT,
                                                     max_ack_pending=5000, ack_wait=60))  # fmt: skip
        sub = await js.pull_subscribe_bind("acks", stream="ACKS")
        meter = CpuMeter({"nats": server.process.pid}, None)
        before = meter.reading()
        started = time.perf_counter()
        received = 0
        while received < messages:
            batch = await sub.fetch(500, timeout=5)
            received += len(batch)
            for msg in batch:
                await msg.ack()
            if layout == "limits_purge":
                await js.purge_stream("ACKS", seq=batch[-1].metadata.sequence.stream + 1)
        # Every ack processed: the consumer's ack floor reached the last message.
        while (await js.consumer_info("ACKS", "acks")).ack_floor.stream_seq < messages:
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - started
        cpu = CpuMeter.per_call_ms(before, meter.reading(), messages)
        left = (await js.stream_info("ACKS")).state.messages
        await nc.close()
        return {"messages": messages, "per_second": round(messages / elapsed, 1),
                "publish_per_second": round(messages / published_in, 1),
                "nats_cpu_us_per_message": round(cpu["nats"] * 1000, 1), "messages_left_in_stream": left}  # fmt: skip
    finally:
        server.stop()
        remove_scratch(home)


def disk_fsyncs_per_second(directory: Path, rounds: int = 5000) -> float:
    """Appends of a touchpoint-sized record, each followed by an fsync, per second, in ``directory``."""
    path = directory / "fsync-probe"
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        started = time.perf_counter()
        for _ in range(rounds):
            os.write(descriptor, PAYLOAD)
            os.fsync(descriptor)
        return round(rounds / (time.perf_counter() - started), 1)
    finally:
        os.close(descriptor)
        path.unlink()


async def run(messages: int) -> dict[str, Any]:
    fsyncs = disk_fsyncs_per_second(Path(tempfile.gettempdir()))
    print(f"disk          {fsyncs} append+fsync per second", flush=True)
    results: dict[str, Any] = {}
    for layout in LAYOUTS:
        results[layout] = await consume(layout, messages)
        print(f"{layout:13s} {results[layout]}", flush=True)
    return {"disk_fsyncs_per_second": fsyncs, "layouts": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=50_000, help="messages per layout (NATS ingest uses 50,000)")
    parser.add_argument("--quick", action="store_true", help="2,000 messages: a check that it runs")
    args = parser.parse_args()
    messages = 2000 if args.quick else args.messages
    write_results("workqueue-acks" + ("-quick" if args.quick else ""), asyncio.run(run(messages)))


if __name__ == "__main__":
    main()
