"""RabbitMQ in: the consumer of the `tasks` queue and the publisher used by the CLI."""
