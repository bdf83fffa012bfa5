"""Helpers deploy/local/stack.py runs with the virtualenv's interpreter (they need aiokafka and cryptography).

python venv_tasks.py kafka-setup --bootstrap 127.0.0.1:19092 --partitions 3 --probe-topic T [TOPIC ...]
python venv_tasks.py gen-keys --private key.pem --public key.pub.pem
python venv_tasks.py has-module device_svc.provision
python venv_tasks.py gen-tls --dir .state/run/mosquitto/tls --host 127.0.0.1 --host localhost
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import sys
import time
import uuid
from pathlib import Path


async def _create_topics(
    bootstrap: str,
    topics: list[str],
    partitions: int,
    replication_factor: int = 1,
    min_insync_replicas: int | None = None,
) -> list[str]:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in dict.fromkeys(topics) if t not in existing]
        if missing:
            configs = {} if min_insync_replicas is None else {"min.insync.replicas": str(min_insync_replicas)}
            new_topics = [
                NewTopic(
                    name=t, num_partitions=partitions, replication_factor=replication_factor, topic_configs=configs
                )
                for t in missing
            ]
            with contextlib.suppress(TopicAlreadyExistsError):  # a concurrent `up` won the race
                await admin.create_topics(new_topics)
        return missing
    finally:
        await admin.close()


async def _probe(bootstrap: str, topic: str) -> float:
    """Produce one record and read it back; tansu's idempotent producer fails, hence enable_idempotence=False."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    marker = uuid.uuid4().hex.encode()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, acks=1)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await producer.start()
    await consumer.start()
    try:
        started = time.perf_counter()
        sent = await producer.send_and_wait(topic, marker, partition=0)
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        consumer.seek(partition, sent.offset)
        async with asyncio.timeout(10):
            while True:
                record = await consumer.getone()
                if record.value == marker:
                    return (time.perf_counter() - started) * 1000
    finally:
        await consumer.stop()
        await producer.stop()


async def _kafka_setup(args: argparse.Namespace) -> int:
    deadline = time.monotonic() + 20
    while True:
        try:
            created = await _create_topics(
                args.bootstrap,
                [*args.topics, args.probe_topic],
                args.partitions,
                args.replication_factor,
                args.min_insync_replicas,
            )
            created = [t for t in created if t != args.probe_topic]
            break
        except Exception as exc:  # the broker may still be starting
            if time.monotonic() > deadline:
                print(f"cannot create topics on {args.bootstrap}: {exc!r}", file=sys.stderr)
                return 1
            await asyncio.sleep(0.5)
    round_trip_ms = await _probe(args.bootstrap, args.probe_topic)
    print(
        f"kafka {args.bootstrap}: {len(args.topics)} contract topics ({len(created)} created, "
        f"{args.partitions} partitions, replication factor {args.replication_factor}); "
        f"produce/consume probe ok in {round_trip_ms:.0f} ms"
    )
    return 0


def _gen_keys(args: argparse.Namespace) -> int:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = Path(args.private)
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    private.chmod(0o600)
    Path(args.public).write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return 0


def _gen_tls(args: argparse.Namespace) -> int:
    from kit.x509 import ensure_authority, ensure_broker_files

    ensure_broker_files(Path(args.dir), args.host)
    # The device CA client certificates are issued with (device-svc DEVICE_CA_*; a CA of its own).
    ensure_authority(Path(args.dir) / "device-ca.crt", Path(args.dir) / "device-ca.key", "pb device CA")
    return 0


def _has_module(args: argparse.Namespace) -> int:
    try:
        return 0 if importlib.util.find_spec(args.module) is not None else 1
    except ModuleNotFoundError:
        return 1


def main() -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    kafka = sub.add_parser("kafka-setup")
    kafka.add_argument("--bootstrap", required=True)
    kafka.add_argument("--partitions", type=int, default=3)
    kafka.add_argument("--probe-topic", required=True)
    # The local tansu broker is one node (1); a production cluster of three brokers uses 3 and 2.
    kafka.add_argument("--replication-factor", type=int, default=1)
    kafka.add_argument("--min-insync-replicas", type=int, default=None)
    kafka.add_argument("topics", nargs="*")
    keys = sub.add_parser("gen-keys")
    keys.add_argument("--private", required=True)
    keys.add_argument("--public", required=True)
    tls = sub.add_parser("gen-tls")
    tls.add_argument("--dir", required=True)
    tls.add_argument("--host", action="append", required=True)
    module = sub.add_parser("has-module")
    module.add_argument("module")
    args = parser.parse_args()
    if args.command == "kafka-setup":
        return asyncio.run(_kafka_setup(args))
    if args.command == "gen-keys":
        return _gen_keys(args)
    if args.command == "gen-tls":
        return _gen_tls(args)
    return _has_module(args)


if __name__ == "__main__":
    sys.exit(main())
