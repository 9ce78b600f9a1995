"""`ps` in the lean client (cli/lean/skiff_lean.py) against the full CLI's rendering of the
same ListContainersResponse: byte for byte, or nothing printed (the full CLI then runs)."""

from __future__ import annotations

import io
import sys

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from skiff.api.v1 import api_pb2
from skiff.cli import containers as cli_containers
from skiff.cli import format as fmt
from skiff.cli.lean import skiff_lean as lean
from skiff.types.v1 import types_pb2

NOW = 1_790_000_000.25
S = types_pb2.ContainerStatus
HEADER = ["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"]


def _ts(secs: float) -> Timestamp:
    return Timestamp(seconds=int(secs), nanos=round((secs - int(secs)) * 1e9))


def _container(n: int, status: int, *, path: str = "true", args: tuple[str, ...] = (), ago: float = 10.0,
               image: str = "busybox", image_id: str = "sha256:" + "ab" * 32, **state: object
               ) -> api_pb2.Container:
    c = api_pb2.Container(id=f"{n:02d}" + "c" * 62, name=f"/name_{n}", image=image, image_id=image_id,
                          path=path, args=list(args), state=types_pb2.ContainerState(status=status))
    if ago >= 0:
        c.created.CopyFrom(_ts(NOW - ago))
    for key, value in state.items():
        if isinstance(value, float):
            getattr(c.state, key).CopyFrom(_ts(value))
        else:
            setattr(c.state, key, value)
    c.config.image = image
    c.host_config.network_mode = "none"
    c.network_settings.network_mode = "none"
    c.log_path = f"/var/log/{n}.log"
    return c


#: every state and column the lean client renders itself
RENDERED = [
    _container(1, S.CONTAINER_STATUS_CREATED),
    _container(2, S.CONTAINER_STATUS_EXITED, path="sh", args=("-c", 'echo "a long command", cut at twenty'),
               ago=3700, exit_code=3, started_at=NOW - 3600.0, finished_at=NOW - 3500.0),
    _container(3, S.CONTAINER_STATUS_RUNNING, path="sleep", args=("600",), ago=120, started_at=NOW - 90.0, pid=7),
    _container(4, S.CONTAINER_STATUS_PAUSED, ago=86400 * 3, started_at=NOW - 86400 * 2.0),
    _container(5, S.CONTAINER_STATUS_RESTARTING, ago=5, exit_code=-1, finished_at=NOW - 1.0),
    _container(6, S.CONTAINER_STATUS_DEAD, path="a\tb\nc\\d", ago=86400 * 400),
    _container(7, S.CONTAINER_STATUS_REMOVING, path="échø", args=("ünï", "\x01"), image="", ago=0.5),
    _container(8, S.CONTAINER_STATUS_EXITED, ago=10, exit_code=137, started_at=NOW - 9.0),  # not finished
    _container(9, S.CONTAINER_STATUS_UNSPECIFIED, ago=10),  # the same created time as 8: order kept
    _container(10, S.CONTAINER_STATUS_CREATED, ago=-1, image="", image_id="sha256:" + "cd" * 32),  # no created
    _container(11, S.CONTAINER_STATUS_EXITED, path="", ago=59.9, exit_code=0, finished_at=NOW - 30.5,
               started_at=NOW - 31.0),
]


def _lean(resp: api_pb2.ListContainersResponse, monkeypatch: pytest.MonkeyPatch, **flags: bool
          ) -> tuple[int | None, str]:
    data = resp.SerializeToString()

    class Conn:
        def unary(self, method: str, message: bytes, **_: object) -> bytes:
            assert method == "ListContainers"
            return data

    import time

    monkeypatch.setattr(time, "time", lambda: NOW)
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    opts = {"verb": "ps", "host": "/x.sock", "all": True, "quiet": False, "no_trunc": False, **flags}
    code = lean.ps(opts, Conn())  # type: ignore[arg-type]
    monkeypatch.undo()
    return code, out.getvalue()


def _full(resp: api_pb2.ListContainersResponse, no_trunc: bool, quiet: bool = False) -> str:
    """What cmd_ps writes for this response (its own sort, rows and table)."""
    found = sorted(resp.containers, key=lambda c: (c.created.seconds, c.created.nanos), reverse=True)
    if quiet:
        return "".join(f"{c.id if no_trunc else fmt.short_id(c.id)}\n" for c in found)
    return fmt.table(HEADER, cli_containers.ps_rows(found, no_trunc, NOW))


@pytest.mark.parametrize("no_trunc", [False, True])
@pytest.mark.parametrize("quiet", [False, True])
def test_every_state_is_printed_as_the_full_cli_prints_it(monkeypatch: pytest.MonkeyPatch, no_trunc: bool,
                                                          quiet: bool) -> None:
    resp = api_pb2.ListContainersResponse(containers=RENDERED)
    code, text = _lean(resp, monkeypatch, no_trunc=no_trunc, quiet=quiet)
    assert code == 0
    assert text == _full(resp, no_trunc, quiet)
    assert len(text.splitlines()) == len(RENDERED) + (0 if quiet else 1)


def test_many_containers_newest_first(monkeypatch: pytest.MonkeyPatch) -> None:
    many = [_container(n % 100, S.CONTAINER_STATUS_CREATED, ago=(n * 7919) % 5000 / 3) for n in range(1000)]
    resp = api_pb2.ListContainersResponse(containers=many)
    code, text = _lean(resp, monkeypatch)
    assert code == 0 and text == _full(resp, False)
    assert len(text.splitlines()) == 1001


def test_empty_list_is_the_header(monkeypatch: pytest.MonkeyPatch) -> None:
    code, text = _lean(api_pb2.ListContainersResponse(), monkeypatch)
    assert code == 0 and text == _full(api_pb2.ListContainersResponse(), False)


def _with_ports() -> api_pb2.Container:
    c = _container(20, S.CONTAINER_STATUS_RUNNING, started_at=NOW - 5.0)
    c.network_settings.ports.add(host_port=8080, container_port=80, protocol="tcp")
    return c


def _with_exposed() -> api_pb2.Container:
    c = _container(21, S.CONTAINER_STATUS_RUNNING, started_at=NOW - 5.0)
    c.config.exposed_ports.append("443/tcp")
    return c


def _with_health() -> api_pb2.Container:
    c = _container(22, S.CONTAINER_STATUS_RUNNING, started_at=NOW - 5.0)
    c.state.health.status = types_pb2.HealthStatus.Value("HEALTH_STATUS_HEALTHY")
    return c


def _with_link() -> api_pb2.Container:
    c = _container(23, S.CONTAINER_STATUS_CREATED)
    c.links.add(parent_id=c.id, child_id=RENDERED[0].id, name="alias")
    return c


@pytest.mark.parametrize("extra", [_with_ports, _with_exposed, _with_health, _with_link])
def test_what_it_does_not_render_goes_to_the_full_cli(monkeypatch: pytest.MonkeyPatch, extra: object) -> None:
    resp = api_pb2.ListContainersResponse(containers=[*RENDERED, extra()])  # type: ignore[operator]
    assert _lean(resp, monkeypatch) == (None, "")


def test_ports_of_a_stopped_container_are_not_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    c = _container(24, S.CONTAINER_STATUS_EXITED, exit_code=0, finished_at=NOW - 2.0)
    c.network_settings.ports.add(host_port=8080, container_port=80, protocol="tcp")
    c.config.exposed_ports.append("443/tcp")
    resp = api_pb2.ListContainersResponse(containers=[c])
    code, text = _lean(resp, monkeypatch)
    assert code == 0 and text == _full(resp, False)
