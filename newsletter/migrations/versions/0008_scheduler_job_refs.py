"""Scheduler jobs stored before the `newsletter.scheduling` package name their new module.

APScheduler keeps a job's function as a text reference ("module:function") inside the pickled
job state. Jobs written while the jobs lived in `newsletter.scheduler` cannot be restored once
that module is gone, and the job store deletes a job it cannot restore the first time anything
lists the jobs (`digest list` would do it): a recurring digest would lose its next run.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import pickle

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# Spelt out: a migration must not follow the code when its modules move again.
_MOVED = {
    "newsletter.scheduler:fire": "newsletter.scheduling.jobs:fire",
    "newsletter.scheduler:run_digest": "newsletter.scheduling.jobs:run_digest",
}

_jobs = sa.table(
    "apscheduler_jobs",
    sa.column("id", sa.Unicode(191)),
    sa.column("job_state", sa.LargeBinary()),
)


def _rename(refs: dict[str, str]) -> None:
    connection = op.get_bind()
    for job_id, blob in connection.execute(sa.select(_jobs.c.id, _jobs.c.job_state)).all():
        # The state is a plain dict (the function only as its text reference): unpickling it
        # imports the trigger classes, never the function being renamed.
        state = pickle.loads(blob)
        renamed = refs.get(state.get("func", ""))
        if renamed is None:
            continue
        state["func"] = renamed
        # The job store's own protocol (its default), so it reads the row back as it wrote it.
        data = pickle.dumps(state, pickle.HIGHEST_PROTOCOL)
        connection.execute(_jobs.update().where(_jobs.c.id == job_id).values(job_state=data))


def upgrade() -> None:
    _rename(_MOVED)


def downgrade() -> None:
    _rename({new: old for old, new in _MOVED.items()})
