"""Real servers for tests and benchmarks: a throwaway PostgreSQL cluster and a Kafka-protocol broker.

Plain classes with explicit ``start()``/``stop()``/``close()`` and context-manager use; nothing here
depends on pytest (``tests/conftest.py`` builds the fixtures on top). Importing this package starts
nothing and reads no environment variable.
"""

from tests.harness.common import ServerError, ServerStartError, default_base_dir
from tests.harness.kafka import KafkaBroker, unique_topic_name
from tests.harness.ports import free_port
from tests.harness.postgres import PostgresServer, unique_database_name

__all__ = [
    "KafkaBroker",
    "PostgresServer",
    "ServerError",
    "ServerStartError",
    "default_base_dir",
    "free_port",
    "unique_database_name",
    "unique_topic_name",
]
