"""Endpoint records on disk: a JSON snapshot and an append-only log of the changes since.

A JSON file rather than SQLite: there are few endpoints. ``endpoints.json`` holds them all
(replaced atomically: temporary file, rename); ``endpoints.log`` beside it holds one JSON line
per change made since (``{"put": record}``, ``{"del": id}``, ``{"cleanup": [veth, …]}``), each
appended by a single ``write(2)``. A change costs ~2 µs instead of the ~0.3-1 ms of rewriting
the snapshot on ext4 (a new inode and a rename that starts the new file's writeback), on the
path of every ``run``. Every :data:`COMPACT_EVERY` changes, and at a clean shutdown, the
snapshot is rewritten and the log emptied. Reading replays the log over the snapshot: replaying
is idempotent (the last line about an id wins), so a crash between the snapshot's rename and
the log's truncation reads the same records.

Written without fsync, as before: a record only describes kernel objects (namespaces under a
tmpfs, veths), which a power cut or a kernel crash takes with it, and a netsvc crash (even
SIGKILL: each line is one write) does not lose the page cache. A snapshot torn by a power cut is
read as empty, a torn log line ends the replay: nothing they described is left.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from skiff.common.files import write_json_atomic
from skiff.netsvc.model import Endpoint, PortBinding

log = logging.getLogger(__name__)

#: Bumped when the file's shape changes; a reader refuses a version it does not know.
VERSION = 1
#: Log lines after which a save rewrites the snapshot and empties the log.
COMPACT_EVERY = 256


class EndpointStore:
    def __init__(self, path: Path):
        self.path = path
        self.log_path = path.with_suffix(".log")
        #: What the files hold (after the last load or save): records by id, and the cleanup journal.
        self._saved: dict[str, Endpoint] | None = None
        self._saved_cleanup: list[str] = []
        self._log_lines = 0
        self._log_fd: int | None = None

    def _read(self) -> dict:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            data = {"version": VERSION, "endpoints": []}
        except ValueError:  # torn by a power cut, which took every namespace and veth with it
            log.warning("%s is unreadable: starting with no endpoint", self.path)
            data = {"version": VERSION, "endpoints": []}
        if data.get("version") != VERSION:
            raise RuntimeError(f"{self.path}: unsupported version {data.get('version')!r}")
        records = {e["container_id"]: e for e in data["endpoints"]}
        cleanup = list(data.get("cleanup", []))
        lines = 0
        try:
            with open(self.log_path, "rb") as f:
                for raw in f:
                    try:
                        change = json.loads(raw)
                        if "put" in change:
                            records[change["put"]["container_id"]] = change["put"]
                        elif "del" in change:
                            records.pop(change["del"], None)
                        elif "cleanup" in change:
                            cleanup = list(change["cleanup"])
                        else:
                            raise ValueError(f"unknown change {sorted(change)}")
                    except (ValueError, KeyError, TypeError) as err:  # torn by a power cut: stop here
                        log.warning("%s: ignoring line %d and after: %s", self.log_path, lines + 1, err)
                        break
                    lines += 1
        except FileNotFoundError:
            pass
        self._log_lines = lines
        return {"version": VERSION, "endpoints": [records[k] for k in sorted(records)], "cleanup": cleanup}

    def load(self) -> dict[str, Endpoint]:
        data = self._read()
        endpoints = {e["container_id"]: _endpoint(e) for e in data["endpoints"]}
        self._saved = dict(endpoints)
        self._saved_cleanup = sorted(str(v) for v in data["cleanup"])
        return endpoints

    def load_cleanup(self) -> list[str]:
        """The host-side veths of deleted endpoints that were still to be deleted (the journal)."""
        return [str(v) for v in self._read().get("cleanup", [])]

    def save(self, endpoints: dict[str, Endpoint], cleanup: list[str] | None = None) -> None:
        """The records, and ``cleanup``: veths of deleted endpoints not yet deleted (finished at start-up).

        Appends the changes since the last save to the log (one write); the first save after
        opening, and every :data:`COMPACT_EVERY` lines, rewrites the snapshot instead.
        """
        cleanup = sorted(cleanup or [])
        if self._saved is None or self._log_lines >= COMPACT_EVERY:
            self._compact(endpoints, cleanup)
            return
        saved = self._saved
        changes: list[dict[str, Any]] = [{"del": cid} for cid in sorted(saved.keys() - endpoints.keys())]
        changes += [{"put": asdict(e)} for cid, e in sorted(endpoints.items())
                    if (old := saved.get(cid)) is not e and old != e]
        if cleanup != self._saved_cleanup:
            changes.append({"cleanup": cleanup})
        if not changes:
            return
        data = "".join(json.dumps(c, separators=(",", ":")) + "\n" for c in changes).encode()
        if self._log_fd is None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        written = os.write(self._log_fd, data)
        if written != len(data):  # (a full disk) the line may be torn: the snapshot says it all instead
            self._compact(endpoints, cleanup)
            return
        self._log_lines += len(changes)
        self._saved = dict(endpoints)
        self._saved_cleanup = cleanup

    def _compact(self, endpoints: dict[str, Endpoint], cleanup: list[str]) -> None:
        """The snapshot rewritten whole, then the log emptied (a crash in between: replaying it
        over the new snapshot gives the same records)."""
        data: dict = {"version": VERSION, "endpoints": [asdict(e) for _, e in sorted(endpoints.items())]}
        if cleanup:
            data["cleanup"] = cleanup
        write_json_atomic(self.path, data, fsync=False)
        if self._log_fd is not None:
            os.ftruncate(self._log_fd, 0)
        else:
            try:
                os.truncate(self.log_path, 0)
            except FileNotFoundError:
                pass
        self._log_lines = 0
        self._saved = dict(endpoints)
        self._saved_cleanup = cleanup

    def close(self, endpoints: dict[str, Endpoint], cleanup: list[str] | None = None) -> None:
        """At a clean shutdown: everything in the snapshot, the log removed."""
        self._compact(endpoints, sorted(cleanup or []))
        if self._log_fd is not None:
            os.close(self._log_fd)
            self._log_fd = None
        try:
            os.unlink(self.log_path)
        except FileNotFoundError:
            pass


def _endpoint(fields: dict) -> Endpoint:
    """An Endpoint from its JSON form (fields added later have defaults, so old files load)."""
    fields = dict(fields)
    fields["ports"] = tuple(PortBinding(**p) for p in fields.get("ports", ()))
    fields["aliases"] = tuple(fields.get("aliases", ()))
    fields["dns_servers"] = tuple(fields.get("dns_servers", ()))
    return Endpoint(**fields)
