"""The GraphDB through the CLI: `rm --link`, removing a linked-to container, `ps --filter label/ancestor/exited`,
`commit` of a running container, sizes in `ps -s` and `system df`."""

from __future__ import annotations

import json

import pytest


@pytest.fixture
def cleanup(skiff):
    names: list[str] = []
    yield names
    if names:
        skiff("rm", "-f", *names)


def _ps_names(skiff, *args: str) -> list[str]:
    """The NAMES column of ``skiff ps -a ARGS``."""
    lines = skiff("ps", "-a", *args, check=True).stdout.splitlines()
    return [line.split()[-1] for line in lines[1:]]


def _links(skiff, name: str) -> list[str]:
    return json.loads(skiff("inspect", name, check=True).stdout)[0]["HostConfig"]["Links"] or []


def test_rm_link_removes_the_link_not_the_container(skiff, cleanup: list[str]) -> None:
    cleanup += ["gdb-db", "gdb-web"]
    skiff("create", "--name", "gdb-db", "--network", "none", "busybox", "true", check=True)
    skiff("create", "--name", "gdb-web", "--network", "none", "--link", "gdb-db:database", "busybox", "true",
          check=True)
    assert _links(skiff, "gdb-web") == ["/gdb-db:/gdb-web/database"]

    out = skiff("rm", "--link", "/gdb-web/database", check=True).stdout
    assert out.strip() == "/gdb-web/database"
    assert _links(skiff, "gdb-web") == []
    names = _ps_names(skiff)
    assert "gdb-db" in names and "gdb-web" in names  # both containers stay

    again = skiff("rm", "--link", "/gdb-web/database")
    assert again.returncode != 0 and "No such link" in again.stderr
    top = skiff("rm", "--link", "gdb-web")
    assert top.returncode != 0 and "cannot remove the default link name" in top.stderr
    assert "gdb-web" in _ps_names(skiff)


def test_removing_a_linked_to_container_drops_its_links(skiff, cleanup: list[str]) -> None:
    # Docker: a container other containers link to is removed like any other; the links go with it.
    cleanup += ["gdb-child", "gdb-parent"]
    skiff("create", "--name", "gdb-child", "--network", "none", "busybox", "true", check=True)
    skiff("create", "--name", "gdb-parent", "--network", "none", "--link", "gdb-child", "busybox", "true",
          check=True)
    assert _links(skiff, "gdb-parent") == ["/gdb-child:/gdb-parent/gdb-child"]
    assert skiff("rm", "gdb-child", check=True).stdout.strip() == "gdb-child"
    assert _links(skiff, "gdb-parent") == []
    # The name is free again, and a new container of that name is not linked.
    skiff("create", "--name", "gdb-child", "--network", "none", "busybox", "true", check=True)
    assert _links(skiff, "gdb-parent") == []


def test_ps_filters_from_the_graphdb(skiff, cleanup: list[str]) -> None:
    cleanup += ["gdb-f1", "gdb-f2", "gdb-f3"]
    skiff("tag", "busybox:latest", "gdb-other:1", check=True)
    try:
        skiff("create", "--name", "gdb-f1", "--network", "none", "-l", "tier=db", "-l", "team", "busybox", "true",
              check=True)
        skiff("run", "--name", "gdb-f2", "--network", "none", "-l", "tier=web", "busybox", "sh", "-c", "exit 3")
        skiff("run", "--name", "gdb-f3", "--network", "none", "busybox", "true", check=True)
        # An image of its own for gdb-f3's descendant: commit makes one whose parent is busybox.
        skiff("commit", "gdb-f3", "gdb-child-image:1", check=True)

        def names(*filters: str) -> list[str]:
            args = [a for f in filters for a in ("--filter", f)]
            out = _ps_names(skiff, *args)
            return sorted(n for n in out if n.startswith("gdb-f"))

        assert names("label=tier") == ["gdb-f1", "gdb-f2"]
        assert names("label=tier=web") == ["gdb-f2"]
        assert names("label=tier", "label=team") == ["gdb-f1"]
        assert names("ancestor=busybox") == ["gdb-f1", "gdb-f2", "gdb-f3"]
        assert names("ancestor=busybox", "label=tier=db") == ["gdb-f1"]
        assert names("exited=3") == ["gdb-f2"]
        assert names("exited=0") == ["gdb-f3"]
        skiff("create", "--name", "gdb-f4", "--network", "none", "gdb-child-image:1", "true", check=True)
        cleanup.append("gdb-f4")
        out = _ps_names(skiff, "--filter", "ancestor=busybox")
        assert "gdb-f4" in out  # made from an image whose parent is busybox
        out = _ps_names(skiff, "--filter", "ancestor=gdb-child-image:1")
        assert [n for n in out if n.startswith("gdb-")] == ["gdb-f4"]
        bad = skiff("ps", "--filter", "ancestor=no-such-image")
        assert bad.returncode != 0 and "No such image" in bad.stderr
    finally:
        skiff("rm", "-f", "gdb-f4")
        skiff("rmi", "gdb-other:1", "gdb-child-image:1")


def test_commit_running_container_and_sizes(skiff, cleanup: list[str]) -> None:
    cleanup.append("gdb-live")
    skiff("run", "-d", "--name", "gdb-live", "--network", "none", "busybox", "sh", "-c",
          "head -c 300000 /dev/zero > /big; echo ready > /ready; exec sleep 300", check=True)
    for _ in range(200):
        if skiff("exec", "gdb-live", "cat", "/ready").stdout.strip() == "ready":
            break
    else:
        pytest.fail("the container never wrote its files")
    try:
        image = skiff("commit", "gdb-live", "gdb-live-image:1", check=True).stdout.strip()
        assert image.startswith("sha256:")
        # Paused during the commit, running again after it.
        assert skiff("inspect", "-f", "{{.State.Status}}", "gdb-live", check=True).stdout.strip() == "running"
        run = skiff("run", "--rm", "--network", "none", "gdb-live-image:1", "sh", "-c", "wc -c < /big; cat /ready",
                    check=True)
        assert run.stdout.split() == ["300000", "ready"]
        assert skiff("commit", "--pause=false", "gdb-live", "gdb-live-image:2", check=True).returncode == 0
        assert skiff("inspect", "-f", "{{.State.Status}}", "gdb-live", check=True).stdout.strip() == "running"

        ps = skiff("ps", "-s", "--filter", "name=^gdb-live$", check=True).stdout.splitlines()
        assert ps[0].split()[-1] == "SIZE"
        assert "300kB (virtual" in ps[1], ps[1]
        df = {line.split()[0]: line.split() for line in skiff("system", "df", check=True).stdout.splitlines()[1:]}
        total, active, size = df["Containers"][1:4]
        assert int(total) >= 1 and int(active) >= 1
        assert size != "0B"
        assert "Local" in df
    finally:
        skiff("rm", "-f", "gdb-live")
        skiff("rmi", "gdb-live-image:1", "gdb-live-image:2")
