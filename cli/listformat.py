"""``--format`` of the list commands (``ps``, ``images``, ``volume ls``, ``network ls``), as Docker's CLI.

- ``table`` or ``table <template>``: a header row, then one row per item, columns aligned as
  Docker's tabwriter does (``\\t`` in the template separates columns);
- ``json``: one JSON object per line (every field, as strings);
- any other text: a Go template rendered once per item, no header.

Templates take ``{{.Field}}``, ``{{.Label "key"}}``, ``{{json .Field}}`` (``{{json .}}``: the
whole row), ``{{upper .Field}}``, ``{{lower .Field}}``, ``{{title .Field}}`` and
``{{truncate .Field N}}``; ``\\t`` and ``\\n`` are a tab and a newline, as in Docker.
"""

from __future__ import annotations

import json
import re
import shlex
import time
from collections.abc import Mapping, Sequence

from skiff.cli import exits
from skiff.cli import format as fmt

_ACTION = re.compile(r"{{-?\s*(.*?)\s*-?}}")
_FIELD = re.compile(r"^\.([A-Za-z_][A-Za-z0-9_]*)?$")
_FUNCS = {"upper": str.upper, "lower": str.lower, "title": str.title}


def _field(row: Mapping[str, str], expr: str) -> object:
    match = _FIELD.match(expr)
    if not match:
        raise exits.CLIError(f"template: unsupported expression {expr!r}", exits.FAILED)
    name = match.group(1)
    if name is None:
        return dict(row)
    if name not in row:
        raise exits.CLIError(f"template: can't evaluate field {name}", exits.FAILED)
    return row[name]


def _label(row: Mapping[str, str], key: str, header: bool) -> str:
    if header:
        return "LABEL"
    for pair in (row.get("Labels") or "").split(","):
        k, sep, v = pair.partition("=")
        if sep and k == key:
            return v
    return ""


def render(template: str, row: Mapping[str, str], header: bool = False) -> str:
    """``template`` for one row (with ``header``: the row holds the column names)."""
    out, pos = [], 0
    for match in _ACTION.finditer(template):
        out.append(template[pos : match.start()])
        pos = match.end()
        try:
            words = shlex.split(match.group(1))
        except ValueError:
            raise exits.CLIError(f"template: bad action {{{{{match.group(1)}}}}}", exits.FAILED) from None
        if len(words) == 2 and words[0] == ".Label":
            out.append(_label(row, words[1], header))
        elif len(words) == 1:
            out.append(str(_field(row, words[0])))
        elif len(words) == 2 and words[0] == "json":
            out.append(json.dumps(_field(row, words[1]), ensure_ascii=False, separators=(",", ":")))
        elif len(words) == 2 and words[0] in _FUNCS:
            out.append(_FUNCS[words[0]](str(_field(row, words[1]))))
        elif len(words) == 3 and words[0] == "truncate" and words[2].isdigit():
            out.append(str(_field(row, words[1]))[: int(words[2])])
        else:
            raise exits.CLIError(f"template: unsupported action {{{{{match.group(1)}}}}}", exits.FAILED)
    out.append(template[pos:])
    return "".join(out)


def _unescape(template: str) -> str:
    return template.replace("\\t", "\t").replace("\\n", "\n")


def is_table(template: str) -> bool:
    return template.strip() == "table" or template.lstrip().startswith("table ")


def format_list(template: str, default: str, rows: Sequence[Mapping[str, str]],
                headers: Mapping[str, str]) -> str:
    """The output of a list command for ``--format template``; ``default`` is the command's
    own table template (used for a bare ``table``)."""
    if template.strip() == "json":
        return "".join(json.dumps(dict(r), ensure_ascii=False, separators=(",", ":")) + "\n" for r in rows)
    if not is_table(template):
        body = _unescape(template.strip())
        return "".join(render(body, r) + "\n" for r in rows)
    body = _unescape(template.strip()[len("table"):].strip() or default)
    lines = [render(body, headers, header=True), *(render(body, r) for r in rows)]
    cells = [line.split("\t") for line in lines]
    ncols = max(len(c) for c in cells)
    padded = [c + [""] * (ncols - len(c)) for c in cells]
    return fmt.table(padded[0], padded[1:])


def created_at(seconds: int) -> str:
    """Go's ``time.Unix(s, 0).String()`` in UTC: ``2026-11-28 07:50:00 +0000 UTC`` (Go's zero
    time when unknown)."""
    if seconds <= 0:
        return "0001-01-01 00:00:00 +0000 UTC"
    return time.strftime("%Y-%m-%d %H:%M:%S +0000 UTC", time.gmtime(seconds))


def labels_text(labels: Mapping[str, str]) -> str:
    """``k=v,k2=v2`` (sorted), as Docker's ``.Labels`` of a list row."""
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
