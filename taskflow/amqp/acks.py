"""Which deliveries of one channel may be acknowledged, and with how few `basic.ack`s.

A `basic.ack` with `multiple=True` acknowledges *every* unsettled delivery up to its tag,
so it may only be sent for a run of tags that are all settled. Delivery tags of a channel
are consecutive integers from 1, so a tag not yet reported is simply one that is not
ready: the window never acks past it, and messages still waiting for their commit are
never acknowledged early. This module is pure bookkeeping; the consumer sends the acks.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class AckPlan:
    """The acks to send now: one `multiple=True` ack up to `up_to`, then one per single."""

    up_to: int | None = None
    singles: tuple[int, ...] = ()

    def __bool__(self) -> bool:
        return self.up_to is not None or bool(self.singles)


@dataclass(slots=True)
class AckWindow:
    """The unsettled delivery tags of one channel, and which of them may be acked."""

    floor: int = 0
    """Every tag up to and including `floor` is settled (acked or given back)."""
    _ready: set[int] = field(default_factory=set)
    _settled: set[int] = field(default_factory=set)

    def ready(self, tag: int) -> None:
        """The message with `tag` is done (its task committed): it may be acked."""
        if tag > self.floor and tag not in self._settled:
            self._ready.add(tag)

    def settled(self, tag: int) -> None:
        """The message with `tag` was settled otherwise (nacked): it must not be acked."""
        self._ready.discard(tag)
        if tag > self.floor:
            self._settled.add(tag)

    @property
    def pending(self) -> int:
        """How many tags are ready but not yet taken for acking."""
        return len(self._ready)

    def take(self) -> AckPlan:
        """The acks for every ready tag, now marked as settled.

        The leading run of settled-or-ready tags above `floor` is covered by one
        `multiple=True` ack (up to its highest ready tag); ready tags after a gap are
        acked one by one, because a multiple ack would also cover the gap.
        """
        if not self._ready:
            return AckPlan()
        top = self.floor
        up_to = None
        while True:
            following = top + 1
            if following in self._ready:
                up_to = following
                self._ready.remove(following)
            elif following in self._settled:
                self._settled.remove(following)
            else:
                break
            top = following
        self.floor = top
        singles = tuple(sorted(self._ready))
        self._settled.update(singles)
        self._ready.clear()
        return AckPlan(up_to, singles)
