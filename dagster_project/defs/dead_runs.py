"""``dead_run_sensor``: under ``dagster dev``/``make ui``, a run whose process died gives back its slots.

Without it, a run killed outright stays ``STARTED`` and holds its ``gpu`` pool
slot, and every later training step waits for it forever
(``dagster_project.dead_runs``; ``make pipeline`` does the same before and
while it runs).
"""

import dagster as dg

from dagster_project.dead_runs import release_dead_runs


@dg.sensor(minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Marks runs whose process is gone as failed and frees their concurrency slots.")
def dead_run_sensor(context: dg.SensorEvaluationContext):
    notes = release_dead_runs(context.instance)
    for note in notes:
        context.log.warning(note)
    return dg.SkipReason("; ".join(notes) if notes else "no run holds resources after its process died")
