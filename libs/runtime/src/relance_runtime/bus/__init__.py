"""The bus port and its adapters: Kafka, the PostgreSQL log, and an in-memory fake."""

from relance_runtime.bus.ports import (
    Bus,
    BusConsumer,
    OutgoingMessage,
    Publisher,
    Record,
    TopicPartition,
)

__all__ = ["Bus", "BusConsumer", "OutgoingMessage", "Publisher", "Record", "TopicPartition"]
