"""``--format`` of the list commands: Docker's table, json and template forms."""

from __future__ import annotations

import json

import pytest

from skiff.cli import exits, listformat

HEADERS = {"ID": "CONTAINER ID", "Names": "NAMES", "Status": "STATUS", "Labels": "LABELS"}
ROWS = [{"ID": "abc", "Names": "web", "Status": "Up 2 seconds", "Labels": "a=1,tier=front"},
        {"ID": "def", "Names": "a-much-longer-name", "Status": "Exited (0)", "Labels": ""}]
DEFAULT = "{{.ID}}\\t{{.Names}}"


def test_a_plain_template_is_one_line_per_row_without_header() -> None:
    out = listformat.format_list("{{.Names}}: {{.Status}}", DEFAULT, ROWS, HEADERS)
    assert out == "web: Up 2 seconds\na-much-longer-name: Exited (0)\n"


def test_table_aligns_columns_under_headers_as_docker() -> None:
    out = listformat.format_list("table {{.Names}}\\t{{.Status}}", DEFAULT, ROWS, HEADERS)
    assert out.splitlines() == ["NAMES                STATUS",
                                "web                  Up 2 seconds",
                                "a-much-longer-name   Exited (0)"]
    # a bare `table` is the command's own layout; short columns are at least 10 wide
    assert listformat.format_list("table", DEFAULT, ROWS, HEADERS).splitlines()[0] == "CONTAINER ID   NAMES"


def test_json_is_one_object_per_line_and_functions_apply() -> None:
    lines = listformat.format_list("json", DEFAULT, ROWS, HEADERS).splitlines()
    assert [json.loads(line) for line in lines] == ROWS
    assert listformat.format_list("{{json .Names}}", DEFAULT, ROWS[:1], HEADERS) == '"web"\n'
    assert listformat.format_list('{{upper .Names}} {{.Label "tier"}}|{{.Label "none"}}|{{truncate .Status 2}}',
                                  DEFAULT, ROWS[:1], HEADERS) == "WEB front||Up\n"
    # `\\n` is a newline, before the one each row ends with (as Docker)
    assert listformat.format_list("{{.ID}}\\n", DEFAULT, ROWS[:1], HEADERS) == "abc\n\n"


@pytest.mark.parametrize("template", ["{{.Nope}}", "{{call .ID}}", "{{.ID.X}}", '{{.Label "unclosed}}'])
def test_bad_templates_are_clear_errors(template: str) -> None:
    with pytest.raises(exits.CLIError, match="template"):
        listformat.format_list(template, DEFAULT, ROWS, HEADERS)


def test_created_at_is_gos_time_string() -> None:
    assert listformat.created_at(0) == "0001-01-01 00:00:00 +0000 UTC"
    assert listformat.created_at(1_700_000_000) == "2023-11-14 22:13:20 +0000 UTC"
    assert listformat.labels_text({"b": "2", "a": "1"}) == "a=1,b=2"


def test_management_names_stand_for_top_level_commands() -> None:
    from skiff.cli.prune import management_argv

    assert management_argv(["container", "ls", "-a"]) == ["ps", "-a"]
    assert management_argv(["-H", "unix:///x", "image", "rm", "a"]) == ["-H", "unix:///x", "rmi", "a"]
    assert management_argv(["--debug", "container", "inspect", "c"]) == ["--debug", "inspect", "--type", "container",
                                                                          "c"]
    assert management_argv(["system", "info"]) == ["info"]
    assert management_argv(["image", "prune", "-f"]) == ["image", "prune", "-f"]  # the group's own
    assert management_argv(["run", "container", "ls"]) == ["run", "container", "ls"]  # an argument, not a group
    with pytest.raises(exits.Usage, match="'container nope' is not a skiff command"):
        management_argv(["container", "nope"])
