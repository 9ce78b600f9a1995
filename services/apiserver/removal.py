"""RemoveContainers: `rm C1 C2 ...` in one call, with one call per backend for the whole batch.

RemoveContainer costs five calls across three services per container (resolve, task,
delete task, delete endpoint, delete record); for 1000 containers that is the whole
time. Here the batch is: GetContainers (graphsvc), ListTasks of these ids (execsvc),
then DeleteTasks, DeleteEndpoints and DeleteContainers (one transaction), in the order
of the single removal: task, endpoint, record last. A container whose step fails keeps
its record (it can be removed again) and gets that step's error; the others go on.
A service killed meanwhile leaves each container whole (its record, and with it its
writable layer) or gone; see docs/architecture.md ("rm of several containers at once").
"""

from __future__ import annotations

import contextlib
import signal
from concurrent.futures import ThreadPoolExecutor

from skiff.api.v1 import api_pb2
from skiff.apiserver import events
from skiff.apiserver.containers import _EXITS_KEPT, Containers, _exit_of
from skiff.apiserver.views import is_live, restarting
from skiff.common import errors, itemerr, trace
from skiff.common.faults import crash_point
from skiff.common.server import CALL_TIMEOUT
from skiff.graph.v1 import graph_pb2

#: The most containers one call removes (the CLIs send larger sets in several calls).
MAX_BATCH = 10000
#: Running containers killed at once with force.
_KILLERS = 8


def _running(cid: str) -> errors.SkiffError:
    return errors.FailedPrecondition(
        f"You cannot remove a running container {cid}. "
        "Stop the container before attempting removal or force remove",
        reason=errors.CONTAINER_RUNNING,
    )


def _restarting(cid: str) -> errors.SkiffError:
    return errors.FailedPrecondition(
        f"You cannot remove a restarting container {cid}. "
        "Stop the container before attempting removal or force remove",
        reason=errors.CONTAINER_RUNNING,
    )


class Removals:
    def __init__(self, containers: Containers):
        self._c = containers

    @classmethod
    def of(cls, containers: Containers) -> Removals:
        return cls(containers)

    def remove(self, refs: list[str], force: bool, remove_volumes: bool = False
               ) -> list[api_pb2.RemoveContainerResult]:
        if not refs:
            raise errors.InvalidArgument("no containers to remove")
        if len(refs) > MAX_BATCH:
            raise errors.InvalidArgument(f"at most {MAX_BATCH} containers in one call, not {len(refs)}")
        c = self._c
        results = [api_pb2.RemoveContainerResult(container=r) for r in refs]
        errs: dict[str, errors.SkiffError] = {}  # by container id
        records: dict[str, graph_pb2.Container] = {}
        first: dict[int, int] = {}  # result index -> index of the first reference to its container
        owner: dict[str, int] = {}
        with trace.span("remove: resolve"):
            found = c._graph.get_containers(list(refs))
        for i, rec in enumerate(found):
            if isinstance(rec, errors.SkiffError):
                _fail(results[i], rec)
                continue
            results[i].id = rec.id
            if rec.id in owner:
                first[i] = owner[rec.id]
                continue
            owner[rec.id] = i
            records[rec.id] = rec
        ids = sorted(records)
        if ids:
            with contextlib.ExitStack() as held:
                for cid in ids:  # in one order: two batches never wait for each other in a cycle
                    held.enter_context(c.restarts.locked(cid))  # a restart due meanwhile finds the record gone
                try:
                    self._remove(ids, records, errs, force, remove_volumes)
                except errors.SkiffError as e:  # before any deletion (those report per container)
                    for cid in ids:
                        errs.setdefault(cid, e)
            c._changed()
        for cid, i in owner.items():
            if cid in errs:
                _fail(results[i], errs[cid])
        for i, j in first.items():  # the same container named twice: as Docker, the second finds it gone
            if results[j].code:
                _fail(results[i], itemerr.error(results[j].code, results[j].message, results[j].reason))
            else:
                _fail(results[i], errors.NotFound(f"No such container: {refs[i]}",
                                                  reason=errors.CONTAINER_NOT_FOUND))
        return results

    def _remove(self, ids: list[str], records: dict[str, graph_pb2.Container], errs: dict[str, errors.SkiffError],
                force: bool, remove_volumes: bool) -> None:
        c = self._c
        with trace.span("remove: tasks"):
            tasks = c._exec.get_tasks(ids)
        doomed: list[str] = []
        running: list[str] = []
        for cid in ids:
            rec, task = records[cid], tasks.get(cid)
            if restarting(rec, task) and not force:
                errs[cid] = _restarting(cid)
            elif is_live(task):
                if force:
                    running.append(cid)
                else:
                    errs[cid] = _running(cid)
            else:
                if force:
                    c.restarts.manual_stop(rec)
                doomed.append(cid)
        if running:
            with trace.span("remove: kill"):
                killed = self._kill(running, records, errs)
            tasks.update(c._exec.get_tasks(killed))
            doomed += killed
        exited = {cid: tasks[cid] for cid in doomed if cid in tasks and not is_live(tasks[cid])}
        events.exited_all(exited.values())
        if exited:
            with c._lock:  # for a WaitContainer(REMOVED) that comes late
                for cid, task in exited.items():
                    c._exits[cid] = _exit_of(task)
                while len(c._exits) > _EXITS_KEPT:
                    c._exits.popitem(last=False)
        for cid in doomed:  # their tasks go: a wait asks for the task again (Containers.wait)
            c._forget_start(cid)
        # Task, endpoint, record: the record last, so a failure anywhere leaves it (rm again).
        for step, point, delete in (
            ("remove: delete tasks", "tasks-deleted",
             lambda xs: c._exec.delete_tasks(xs, force=force, remove_logs=True)),
            ("remove: delete endpoints", "endpoints-deleted", c._net.delete_endpoints),
            ("remove: delete records", "records-deleted",
             lambda xs: c._graph.delete_containers(xs, remove_volumes=remove_volumes)),
        ):
            if not doomed:
                return
            with trace.span(step):
                try:
                    failed = delete(doomed)
                except errors.SkiffError as e:  # the whole call failed: none of the rest is removed
                    failed = dict.fromkeys(doomed, e)
            errs.update(failed)
            doomed = [cid for cid in doomed if cid not in failed]
            crash_point(f"apiserver:remove-containers:{point}")
        events.destroyed(doomed)

    def _kill(self, running: list[str], records: dict[str, graph_pb2.Container],
              errs: dict[str, errors.SkiffError]) -> list[str]:
        """SIGKILL each and wait for its exit (as RemoveContainer with force); those that ended."""
        c = self._c

        def kill(cid: str) -> None:
            c.restarts.manual_stop(records[cid])
            if c._signal(cid, signal.SIGKILL):
                c._exec.wait_task(cid, timeout=CALL_TIMEOUT)

        ended = []
        with ThreadPoolExecutor(min(_KILLERS, len(running))) as pool:
            for cid, fut in [(cid, pool.submit(kill, cid)) for cid in running]:
                try:
                    fut.result()
                    ended.append(cid)
                except errors.SkiffError as e:
                    errs[cid] = e
        return ended


def _fail(result: api_pb2.RemoveContainerResult, err: errors.SkiffError) -> None:
    result.code, result.message, result.reason = itemerr.fields(err)


__all__ = ["MAX_BATCH", "Removals"]
