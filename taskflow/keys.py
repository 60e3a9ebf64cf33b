"""Typed `web.AppKey`s: everything the application holds, in one place."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from taskflow.actors.pipeline import Pipeline
from taskflow.amqp.state import ConsumerState
from taskflow.config import Settings
from taskflow.db.connector import Database
from taskflow.db.listener import EventListener
from taskflow.db.store import TaskStore
from taskflow.metrics import Metrics

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
STORE = web.AppKey("store", TaskStore)
DATABASE = web.AppKey("database", Database)
LISTENER = web.AppKey("listener", EventListener)
PIPELINE = web.AppKey("pipeline", Pipeline)
CONSUMER_STATE = web.AppKey("consumer_state", ConsumerState)
DATABASE_MODE = web.AppKey("database_mode", str)
OPENAPI: web.AppKey[dict[str, Any]] = web.AppKey("openapi")
