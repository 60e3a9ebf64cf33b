"""marshmallow schemas documenting `GET /stats` and `GET /stats/rates` (OpenAPI)."""

from __future__ import annotations

import marshmallow as ma

_PER_SECOND = {"description": "Per second.", "minimum": 0}


class RatesSchema(ma.Schema):
    """Status changes per second, all instances together."""

    created = ma.fields.Float(required=True, metadata=_PER_SECOND)
    completed = ma.fields.Float(required=True, metadata=_PER_SECOND)
    failed = ma.fields.Float(required=True, metadata=_PER_SECOND)
    cancelled = ma.fields.Float(required=True, metadata=_PER_SECOND)


class InstanceSchema(ma.Schema):
    """A live instance: one that sent a heartbeat within the last three heartbeats."""

    id = ma.fields.String(required=True, metadata={"description": "Its `lease_owner` name."})
    started_at = ma.fields.AwareDateTime(required=True)
    last_seen_at = ma.fields.AwareDateTime(required=True)
    processors = ma.fields.Integer(required=True, metadata={"minimum": 0})
    busy = ma.fields.Integer(
        required=True, metadata={"minimum": 0, "description": "Processors working on an attempt."}
    )
    queue_depth = ma.fields.Integer(
        required=True, metadata={"minimum": 0, "description": "Creates waiting in its intake."}
    )
    queue_capacity = ma.fields.Integer(
        required=True, metadata={"minimum": 0, "description": "The intake queue's bound."}
    )


class CountsSchema(ma.Schema):
    """Tasks stored in each status."""

    new = ma.fields.Integer(required=True)
    in_progress = ma.fields.Integer(required=True)
    completed = ma.fields.Integer(required=True)
    failed = ma.fields.Integer(required=True)
    cancelled = ma.fields.Integer(required=True)


class StatsSchema(ma.Schema):
    """The body of `GET /stats`."""

    counts = ma.fields.Nested(CountsSchema, required=True)
    rates = ma.fields.Nested(
        RatesSchema, required=True, metadata={"description": "Over the last minute."}
    )
    instances = ma.fields.List(ma.fields.Nested(InstanceSchema), required=True)


class RateBucketSchema(ma.Schema):
    """Status changes per second during one bucket."""

    at = ma.fields.AwareDateTime(required=True, metadata={"description": "The bucket's start."})
    created = ma.fields.Float(required=True, metadata=_PER_SECOND)
    completed = ma.fields.Float(required=True, metadata=_PER_SECOND)
    failed = ma.fields.Float(required=True, metadata=_PER_SECOND)
    cancelled = ma.fields.Float(required=True, metadata=_PER_SECOND)


class RateSeriesSchema(ma.Schema):
    """The body of `GET /stats/rates`: the last 15 minutes, oldest first."""

    bucket_s = ma.fields.Integer(required=True, metadata={"description": "Width of a bucket."})
    items = ma.fields.List(ma.fields.Nested(RateBucketSchema), required=True)
