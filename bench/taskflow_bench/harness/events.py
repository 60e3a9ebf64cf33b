"""The log events the tests and the bench look for, by their structlog `event` key.

Each is named once here, so renaming an event in taskflow is a one-line change. Several
are still English sentences in taskflow (marked below); the tests match them whole, as
keys, never by a part of the sentence.
"""

PIPELINE_STARTED = "pipeline started"
PIPELINE_STOPPED = "pipeline stopped"
STATUS_CHANGED = "status changed"
TASK_CREATED = "task created"
HTTP_REQUEST = "http request"
TASKFLOW_STOPPED = "taskflow stopped"
# Sentences, not yet keys:
FENCED = "outcome fenced off: another attempt holds the task"
ACTOR_DIED = "actor died, pipeline stopped"
DATABASE_RETRYING = "db.unreachable"
SHUTDOWN_BEGUN = "shutdown begun: intake stopped"
EMBEDDED_IN_USE = "DATABASE_URL is not set: using an embedded PostgreSQL"
WAITING_FOR_BROKER = "waiting for RabbitMQ; HTTP intake works meanwhile"
EMBEDDED_STARTED = "embedded PostgreSQL started"
EMBEDDED_STOPPED = "embedded PostgreSQL stopped"
EMBEDDED_LEFT = "embedded PostgreSQL left, in use"
EMBEDDED_JOINED = "embedded PostgreSQL joined"
