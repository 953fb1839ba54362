"""Child-process functions for pipeline tests (see tests.support.child)."""

from __future__ import annotations

import json

from onwatch.core.models import Organization


def make_org(name: str) -> None:
    """The organization the `onwatch services` and `pipelines` commands work in."""
    Organization.objects.get_or_create(name=name)


def print_once_interrupted(service: str) -> None:
    """Once the service's pipeline has ended and alerted: its state, reason, steps and the
    titles of the alerts sent (a second one would come at once), as JSON."""
    import time

    from onwatch.alerts.models import Delivery
    from onwatch.deploys.models import ENDED, Pipeline
    from tests.support.child import wait_until

    pipeline = wait_until(
        lambda: Pipeline.objects.filter(service__name=service, state__in=ENDED).first()
    )
    assert pipeline is not None
    wait_until(Delivery.objects.exists)
    time.sleep(1)
    steps = [[s.name, s.state] for s in pipeline.steps.all()]
    titles = sorted(Delivery.objects.values_list("title", flat=True))
    print(json.dumps([pipeline.state, pipeline.reason, steps, titles]))
