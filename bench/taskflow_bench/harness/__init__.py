"""The one way tests and the bench run taskflow: processes, metrics, waits.

It lives in the bench's distribution (not in taskflow's wheel) so that the bench and the
tests share it: `environment` builds a service's environment (every variable name is
spelled there once), `service` starts `taskflow serve` and reads its JSON logs, `metrics`
reads `/metrics`, `tasks` waits for a task to finish, `broker` deletes the queues a
service declared.
"""
