"""`skiff exec`: ExecContainer over graphsvc (which container) and execsvc (the process).

The gateway keeps nothing: the exec's id is made here, execsvc's StartExec runs
the command (its monitor keeps the output and the exit status in the container's
bundle) and AttachExec streams them back, the exit status last.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

from skiff.api.v1 import api_pb2
from skiff.apiserver import events, resume, stdio
from skiff.apiserver.backends import ExecBackend, GraphBackend
from skiff.apiserver.callctx import Call
from skiff.apiserver.containers import Containers
from skiff.common import errors
from skiff.exec.v1 import exec_pb2
from skiff.types.v1 import types_pb2


class Execs:
    def __init__(self, graph: GraphBackend, exec_: ExecBackend):
        self._graph = graph
        self._exec = exec_

    @classmethod
    def of(cls, containers: Containers) -> Execs:
        """The exec half of the container API, over the same backends as ``containers``."""
        return cls(containers._graph, containers._exec)

    def run(self, requests: Iterator[api_pb2.ExecContainerRequest], call: Call
            ) -> Iterator[api_pb2.ExecContainerResponse]:
        first = next(requests, None)
        if first is None or first.WhichOneof("part") != "options":
            raise errors.InvalidArgument("the first exec request must carry the options")
        opts = first.options
        if not opts.cmd:
            raise errors.InvalidArgument("no command given", reason=errors.NO_COMMAND)
        keys = stdio.detach_sequence(opts.detach_keys)
        record = self._graph.get_container(opts.container)
        try:
            running = self._exec.get_task(record.id).state.status == types_pb2.CONTAINER_STATUS_RUNNING
        except errors.NotFound:
            running = False
        if not running:
            raise errors.FailedPrecondition(f"Container {record.id} is not running",
                                            reason=errors.CONTAINER_NOT_RUNNING)
        exec_id = secrets.token_hex(16)
        self._exec.start_exec(exec_pb2.ExecSpec(
            task_id=record.id, exec_id=exec_id, args=opts.cmd, env=opts.env, user=opts.user,
            working_dir=opts.working_dir, tty=opts.tty, stdin=opts.stdin, console_size=opts.console_size,
            privileged=opts.privileged,
        ))
        events.exec_started(record.id, exec_id, list(opts.cmd))
        if opts.detach:
            yield api_pb2.ExecContainerResponse(exit=api_pb2.ExitStatus(exit_code=0))
            return
        output, pump = call, None
        if opts.stdin or opts.tty:
            target = exec_pb2.StdinTarget(task_id=record.id, exec_id=exec_id, close_on_eof=opts.stdin)
            pump = stdio.Pump(requests, target, keys, self._exec.attach_stdin, lambda: None, with_stdin=opts.stdin)
            output = Call(call.remaining())  # a detach ends the output, not the caller's call
            call.on_cancel(output.cancel)
            pump.start(on_detach=output.cancel)
        try:
            for resp in resume.attach_exec(self._exec, record.id, exec_id, output):
                if resp.WhichOneof("part") == "output":
                    yield api_pb2.ExecContainerResponse(output=resp.output)
                else:
                    events.exec_event(record.id, "exec_die", execID=exec_id, exitCode=str(resp.exit_code))
                    yield api_pb2.ExecContainerResponse(exit=api_pb2.ExitStatus(exit_code=resp.exit_code))
                    return
        except errors.SkiffError:
            if pump is None or not pump.detached.is_set():
                raise
        finally:
            if pump is not None:
                pump.stop()
        if pump is not None and pump.detached.is_set():
            yield api_pb2.ExecContainerResponse(detached=True)
            return
        if not call.cancelled:
            raise errors.Unavailable(f"exec {exec_id}: the output stream ended without an exit status")
