"""taskflow: durable tasks over HTTP and RabbitMQ, run by asyncio actors, kept in PostgreSQL."""

__version__ = "0.1.0"
