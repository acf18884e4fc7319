"""Print every record of Foresight's Avro topics as one JSON line: topic, key, schema_id, value.

Needs only ``aiokafka`` and ``fastavro`` (``pip install aiokafka fastavro``), nothing of
Foresight's. Records are in Confluent's wire format (a zero byte, the writer schema's registry
id as a big-endian uint32, the Avro body); the writer schema comes from the registry, once per
id. With ``--reader-schema``, records of that schema's name are read into it (Avro schema
resolution), as a consumer built against one version of a schema reads every other.

    python examples/python/subscriber.py --registry http://127.0.0.1:8085 predictions alerts

It reads each topic from its start and stops after ``--max`` records, or when nothing came for
``--idle`` seconds. JSON has no NaN or infinity: such values print as null; bytes print as
base64.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import io
import json
import math
import struct
import sys
import urllib.request
import uuid
from typing import Any

import fastavro
from aiokafka import AIOKafkaConsumer


def as_json(value: Any) -> Any:
    """``value`` as JSON can carry it: NaN and infinities as None, bytes as base64,
    timestamps as epoch milliseconds (as Avro carries them)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, datetime.datetime):  # fastavro reads timestamp-millis as datetime
        return round(value.timestamp() * 1000)
    if isinstance(value, list):
        return [as_json(v) for v in value]
    if isinstance(value, dict):
        return {k: as_json(v) for k, v in value.items()}
    return value


class Registry:
    """Writer schemas by id, from a Confluent-compatible schema registry."""

    def __init__(self, url: str, readers: dict[str, Any]) -> None:
        self.url = url.rstrip("/")
        self.readers = readers  # full name -> parsed reader schema
        self.schemas: dict[int, tuple[Any, Any]] = {}

    def pair(self, schema_id: int) -> tuple[Any, Any]:
        """The writer schema of ``schema_id`` and the schema to read it into."""
        if schema_id not in self.schemas:
            url = f"{self.url}/schemas/ids/{schema_id}/schema"
            with urllib.request.urlopen(url, timeout=10) as response:
                raw = json.loads(response.read())
            writer = fastavro.parse_schema(raw)
            name = f"{raw.get('namespace', '')}.{raw['name']}".lstrip(".")
            self.schemas[schema_id] = (writer, self.readers.get(name, writer))
        return self.schemas[schema_id]

    def decode(self, value: bytes) -> tuple[int, Any]:
        if len(value) < 5 or value[0] != 0:
            raise ValueError("not Confluent-framed")
        (schema_id,) = struct.unpack_from(">I", value, 1)
        writer, reader = self.pair(schema_id)
        body = io.BytesIO(value[5:])
        return schema_id, fastavro.schemaless_reader(body, writer, reader)


async def subscribe(args: argparse.Namespace, registry: Registry) -> None:
    consumer = AIOKafkaConsumer(
        *args.topics,
        bootstrap_servers=args.bootstrap,
        group_id=f"foresight-example-{uuid.uuid4().hex[:8]}",  # a new group: from the start
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        while not consumer.assignment():  # the group's first rebalance
            await consumer.getmany(timeout_ms=200)
        seen, loop = 0, asyncio.get_running_loop()
        quiet_since = loop.time()
        while seen < args.max and loop.time() - quiet_since < args.idle:
            for messages in (await consumer.getmany(timeout_ms=200)).values():
                quiet_since = loop.time()
                for m in messages[: args.max - seen]:
                    try:
                        schema_id, value = registry.decode(m.value)
                    except ValueError as error:
                        print(f"{m.topic}@{m.offset}: {error}, skipped", file=sys.stderr)
                        continue
                    key = m.key.decode() if m.key is not None else None
                    line = {"topic": m.topic, "key": key, "schema_id": schema_id}
                    print(json.dumps({**line, "value": as_json(value)}), flush=True)
                    seen += 1
    finally:
        await consumer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("topics", nargs="+")
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--registry", default="http://127.0.0.1:8085")
    parser.add_argument("--reader-schema", action="append", default=[], metavar="FILE")
    parser.add_argument("--max", type=int, default=sys.maxsize)
    parser.add_argument("--idle", type=float, default=5.0, help="seconds")
    args = parser.parse_args()
    readers = {}
    for path in args.reader_schema:
        with open(path) as file:
            raw = json.load(file)
        readers[f"{raw.get('namespace', '')}.{raw['name']}".lstrip(".")] = fastavro.parse_schema(
            raw
        )
    asyncio.run(subscribe(args, Registry(args.registry, readers)))


if __name__ == "__main__":
    main()
