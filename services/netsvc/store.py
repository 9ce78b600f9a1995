"""Endpoint records on disk: one small JSON file, replaced atomically.

A JSON file rather than SQLite: there are few endpoints, every change rewrites
them all in well under a millisecond, and a crash of netsvc leaves either the old
or the new file (write to a temporary file, rename) — never a torn one.

Written without fsync (~1-2 ms per create and delete, on the path of every ``run``):
a record only describes kernel objects (namespaces under a tmpfs, veths), which a
power cut or a kernel crash takes with it, and a netsvc crash does not lose the page
cache. A file torn by a power cut is read as empty: nothing it described is left.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

from skiff.common.files import write_json_atomic
from skiff.netsvc.model import Endpoint, PortBinding

log = logging.getLogger(__name__)

#: Bumped when the file's shape changes; a reader refuses a version it does not know.
VERSION = 1


class EndpointStore:
    def __init__(self, path: Path):
        self.path = path

    def _read(self) -> dict:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {"version": VERSION, "endpoints": []}
        except ValueError:  # torn by a power cut, which took every namespace and veth with it
            log.warning("%s is unreadable: starting with no endpoint", self.path)
            return {"version": VERSION, "endpoints": []}
        if data.get("version") != VERSION:
            raise RuntimeError(f"{self.path}: unsupported version {data.get('version')!r}")
        return dict(data)

    def load(self) -> dict[str, Endpoint]:
        return {e["container_id"]: _endpoint(e) for e in self._read()["endpoints"]}

    def load_cleanup(self) -> list[str]:
        """The host-side veths of deleted endpoints that were still to be deleted (the journal)."""
        return [str(v) for v in self._read().get("cleanup", [])]

    def save(self, endpoints: dict[str, Endpoint], cleanup: list[str] | None = None) -> None:
        """The records, and ``cleanup``: veths of deleted endpoints not yet deleted (finished at start-up)."""
        data: dict = {"version": VERSION, "endpoints": [asdict(e) for _, e in sorted(endpoints.items())]}
        if cleanup:
            data["cleanup"] = sorted(cleanup)
        write_json_atomic(self.path, data, fsync=False)


def _endpoint(fields: dict) -> Endpoint:
    """An Endpoint from its JSON form (fields added later have defaults, so old files load)."""
    fields = dict(fields)
    fields["ports"] = tuple(PortBinding(**p) for p in fields.get("ports", ()))
    fields["aliases"] = tuple(fields.get("aliases", ()))
    fields["dns_servers"] = tuple(fields.get("dns_servers", ()))
    return Endpoint(**fields)
