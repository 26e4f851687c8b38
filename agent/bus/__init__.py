"""Bus transports behind one interface: `make_bus(settings)` picks embedded or Kafka."""

from __future__ import annotations

from agent.bus.base import Bus, BusError, Consumer, Record, TopicPartition
from agent.bus.embedded import EmbeddedBus
from agent.errors import ConfigError
from agent.settings import Settings

__all__ = ["Bus", "BusError", "Consumer", "Record", "TopicPartition", "EmbeddedBus", "make_bus"]


def make_bus(settings: Settings) -> Bus:
    url = settings.bus
    if url == "embedded" or url.startswith("embedded:"):
        path = url.split(":", 1)[1] if ":" in url else settings.log_path
        return EmbeddedBus(path, partitions=settings.partitions)
    if url.startswith("kafka://"):
        from agent.bus.kafka import KafkaBus  # aiokafka is only imported when used

        return KafkaBus(
            bootstrap=url[len("kafka://") :],
            partitions=settings.partitions,
            idempotent=settings.kafka_idempotent,
            topic_prefix=settings.kafka_topic_prefix,
            replication=settings.kafka_replication,
            broker_timeout_s=settings.kafka_broker_timeout_s,
            consumer_options={
                "session_timeout_ms": settings.kafka_session_timeout_ms,
                "heartbeat_interval_ms": settings.kafka_heartbeat_interval_ms,
                "rebalance_timeout_ms": settings.kafka_session_timeout_ms,
                "fetch_max_wait_ms": settings.kafka_fetch_max_wait_ms,
            },
        )
    raise ConfigError(f"unknown bus {url!r}",
                      hint="set --bus / DIANXIAO_BUS to 'embedded' or 'kafka://HOST:PORT[,HOST:PORT]'")
