"""Components register themselves; the API's schemas do not depend on the AMQP package."""

from __future__ import annotations

import subprocess
import sys

from taskflow.amqp.state import ConsumerPhase
from taskflow.api.schemas import CONSUMER_STATES


def test_readiness_names_every_consumer_phase() -> None:
    assert [phase.value for phase in ConsumerPhase] == CONSUMER_STATES


def test_the_schemas_import_nothing_of_amqp() -> None:
    code = (
        "import sys, taskflow.api.schemas\n"
        "assert not [m for m in sys.modules if m.startswith('taskflow.amqp')], sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
