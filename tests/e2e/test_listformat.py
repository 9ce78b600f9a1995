"""`--format`, `-n` and `-l` of the list commands, through the CLI against a real engine."""

from __future__ import annotations

import json
import uuid


def ok(r) -> str:
    assert r.returncode == 0, f"exit {r.returncode}: {r.stderr}"
    return r.stdout


def test_ps_format_table_json_and_last(skiff) -> None:
    tag = uuid.uuid4().hex[:8]
    ok(skiff("run", "--name", f"fmt-a-{tag}", "--label", f"t={tag}", "-v", f"fmtvol-{tag}:/d", "busybox", "true"))
    first = ok(skiff("inspect", "-f", "{{.Id}}", f"fmt-a-{tag}")).strip()
    second = ok(skiff("create", "--name", f"fmt-b-{tag}", "--network", "none", "busybox", "sleep", "5")).strip()
    try:
        # `table` alone is the default layout (CREATED/STATUS may tick between the two calls)
        plain, table = ok(skiff("ps", "-a")).splitlines(), ok(skiff("ps", "-a", "--format", "table")).splitlines()
        assert table[0].split() == plain[0].split() and [r.split()[0] for r in table] == [r.split()[0] for r in plain]
        rows = [line.split("|") for line in ok(skiff(
            "ps", "-a", "--filter", f"name=fmt-.-{tag}",
            "--format", '{{.Names}}|{{.State}}|{{.Label "t"}}|{{.Mounts}}|{{.LocalVolumes}}|{{.Networks}}|{{.ID}}',
        )).splitlines()]
        assert rows == [[f"fmt-b-{tag}", "created", "", "", "0", "none", second[:12]],
                        [f"fmt-a-{tag}", "exited", tag, f"fmtvol-{tag}"[:15], "1", "bridge", first[:12]]]
        table = ok(skiff("ps", "-a", "--filter", f"label=t={tag}", "--format", "table {{.Names}}\\t{{.Status}}"))
        header, row = table.splitlines()
        assert header.split() == ["NAMES", "STATUS"] and row.startswith(f"fmt-a-{tag}   Exited (0)")
        [obj] = [json.loads(line) for line in ok(skiff("ps", "-a", "--filter", f"label=t={tag}",
                                                       "--format", "json")).splitlines()]
        assert (obj["ID"], obj["Names"], obj["Command"], obj["Labels"]) == (first[:12], f"fmt-a-{tag}", '"true"',
                                                                           f"t={tag}")
        # -l / -n: the latest created ones, whatever their state
        assert ok(skiff("ps", "-l", "-q", "--no-trunc")).split() == [second]
        assert ok(skiff("ps", "-n", "2", "-q", "--no-trunc")).split() == [second, first]
        bad = skiff("ps", "-a", "--format", "{{.Nope}}")
        assert bad.returncode == 1 and "can't evaluate field Nope" in bad.stderr, bad.stderr
    finally:
        skiff("rm", "-f", first, second)
        skiff("volume", "rm", f"fmtvol-{tag}")


def test_images_volume_network_formats(skiff) -> None:
    plain, table = ok(skiff("images")).splitlines(), ok(skiff("images", "--format", "table")).splitlines()
    assert table[0].split() == plain[0].split() and [r.split()[:3] for r in table] == [r.split()[:3] for r in plain]
    lines = ok(skiff("images", "--format", "{{.Repository}}:{{.Tag}}")).split()
    assert "busybox:latest" in lines
    [img] = [json.loads(line) for line in ok(skiff("images", "--format", "json")).splitlines()
             if json.loads(line)["Repository"] == "busybox"]
    assert img["ID"] == ok(skiff("inspect", "-f", "{{.Id}}", "busybox")).strip()[7:19]
    name = f"fmtv-{uuid.uuid4().hex[:8]}"
    ok(skiff("volume", "create", "--label", "team=x", name))
    try:
        assert ok(skiff("volume", "ls", "--format", "table")) == ok(skiff("volume", "ls"))
        assert f'{name} local x' in ok(skiff("volume", "ls", "--format", '{{.Name}} {{.Driver}} {{.Label "team"}}'))
    finally:
        skiff("volume", "rm", name)
    assert ok(skiff("network", "ls", "--format", "table")) == ok(skiff("network", "ls"))
    nets = {json.loads(line)["Name"]: json.loads(line) for line in
            ok(skiff("network", "ls", "--format", "json")).splitlines()}
    assert {"bridge", "host", "none"} <= set(nets) and nets["none"]["Driver"] == "null"
