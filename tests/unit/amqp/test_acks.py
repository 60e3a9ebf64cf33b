"""The ack window: never acknowledges a delivery whose task is not committed."""

from __future__ import annotations

from taskflow.amqp.acks import AckPlan, AckWindow


def test_nothing_ready_means_nothing_to_ack() -> None:
    window = AckWindow()
    assert not window.take()
    assert window.take() == AckPlan()


def test_a_plan_with_either_kind_of_ack_is_something_to_send() -> None:
    assert AckPlan(up_to=1)
    assert AckPlan(singles=(3,))


def test_a_leading_run_is_one_multiple_ack() -> None:
    window = AckWindow()
    for tag in (3, 1, 2):
        window.ready(tag)
    assert window.take() == AckPlan(up_to=3)
    assert window.floor == 3
    assert not window.take()


def test_tags_after_a_gap_are_acked_one_by_one() -> None:
    window = AckWindow()
    for tag in (1, 2, 4, 5):
        window.ready(tag)  # 3 is still waiting for its commit
    assert window.take() == AckPlan(up_to=2, singles=(4, 5))

    window.ready(3)
    window.ready(6)
    # A multiple ack up to 6 is safe now: 4 and 5 are settled, not pending.
    assert window.take() == AckPlan(up_to=6)
    assert window.floor == 6


def test_a_tag_acked_alone_is_never_acked_again() -> None:
    window = AckWindow()
    window.ready(1)
    window.ready(3)  # 2 is still waiting for its commit
    assert window.take() == AckPlan(up_to=1, singles=(3,))
    assert window.pending == 0
    # RabbitMQ closes the channel on an ack of a tag it no longer knows: 3 must not come back.
    assert not window.take()

    window.ready(2)
    assert window.take() == AckPlan(up_to=2)
    window.ready(4)
    assert window.take() == AckPlan(up_to=4)  # 3 was skipped over, not acked a second time
    assert window.floor == 4


def test_a_tag_never_reported_blocks_multiple_acks_past_it() -> None:
    window = AckWindow()
    window.ready(2)  # tag 1 was delivered but its handler has not reported
    assert window.take() == AckPlan(singles=(2,))
    assert window.floor == 0


def test_nacked_tags_are_skipped_but_never_acked() -> None:
    window = AckWindow()
    window.ready(1)
    window.settled(2)  # given back to the queue
    window.ready(3)
    plan = window.take()
    assert plan == AckPlan(up_to=3)
    assert window.floor == 3

    window.settled(4)
    assert not window.take()  # only nacks: nothing to ack
    window.ready(5)
    assert window.take() == AckPlan(up_to=5)


def test_a_settled_tag_cannot_become_ready_again() -> None:
    window = AckWindow()
    window.settled(1)
    window.ready(1)
    window.ready(2)
    assert window.take() == AckPlan(up_to=2)
    window.ready(2)  # already acked
    assert not window.take()
    assert window.pending == 0
