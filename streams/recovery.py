"""Faust's table recovery, with one order fixed so a rebalance cannot lose an input record.

When a worker with tables finishes restoring its changelogs, Faust (0.15.3)
``Recovery.on_recovery_completed`` resumes the input partitions, *then* awaits the seek to
their committed offsets, *then* resumes flow control. The consumer's flow is already active
(recovery turned it on to read the changelogs), so during the seek's round trip the fetcher
hands records of the resumed partitions to the agents' queues and marks them read; resuming
flow control then clears those queues. A record that sat in a queue at that moment is
dropped, and the re-read that the seek starts is dropped too, since the consumer's read
offset is already past it: the worker is handed offset N-1, then N+1, and record N never
reaches it (seen in ``tests/integration/test_scale_out.py`` as one sample missing from an
entity's window after a failover). On the path without tables Faust's flow is still off
during the seek, so nothing is fetched early (faust-streaming PR #217 fixed that path); this
gives the path with tables the same guarantee: seek while the partitions are still paused,
then resume them and the flow.
"""

from __future__ import annotations

import asyncio
from typing import Any

from faust.tables.manager import TableManager
from faust.tables.recovery import Recovery


class SeekFirstRecovery(Recovery):
    """Recovery that seeks the input partitions to their committed offsets before resuming
    them, so nothing is fetched from them until the seek has taken effect."""

    async def on_recovery_completed(self, generation_id: int = 0) -> None:
        """Faust's ``on_recovery_completed`` with the seek moved before the resume."""
        app: Any = self.app
        consumer = app.consumer
        self.log.info("Restore complete!")
        await app.on_rebalance_complete.send()
        self._set_recovery_ended()
        callbacks = [
            asyncio.ensure_future(
                table.on_recovery_completed(
                    self.actives_for_table[table], self.standbys_for_table[table]
                )
            )
            for table in self.tables.values()
        ]
        if callbacks:
            await asyncio.wait(callbacks)
        assignment = consumer.assignment()
        if app.consumer_generation_id != generation_id:
            self.log.warning(
                "Recovery rebalancing again app id %s param %s",
                app.consumer_generation_id,
                generation_id,
            )
            return
        if assignment:
            self.log.info("Seek stream partitions to committed offsets.")
            await self._wait(consumer.perform_seek(), timeout=app.conf.broker_request_timeout)
        consumer.resume_partitions({tp for tp in assignment if not self._is_changelog_tp(tp)})
        self.completed.set()
        app.flow_control.resume()
        consumer.resume_flow()
        await app._fetcher.maybe_start()
        self.tables.on_actives_ready()
        if not app.assignor.assigned_standbys():
            self.tables.on_standbys_ready()
        app.on_rebalance_end()
        self.log.info("Worker ready")


class SeekFirstTableManager(TableManager):
    """Faust's table manager, recovering with :class:`SeekFirstRecovery`."""

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = SeekFirstRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery
