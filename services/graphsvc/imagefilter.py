"""``images --filter``: Docker's ``dangling``, ``reference``, ``before``, ``since`` and ``label``."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import replace

from skiff.common.errors import UNSUPPORTED_FILTER, InvalidArgument
from skiff.graphsvc.images import Image, ImageStore

SUPPORTED = ("dangling", "reference", "before", "since", "label")


def _repo(tag: str) -> str:
    name, sep, t = tag.rpartition(":")
    return name if sep and "/" not in t else tag


def _ref_match(tag: str, pattern: str) -> bool:
    return fnmatch.fnmatchcase(tag, pattern) or fnmatch.fnmatchcase(_repo(tag), pattern)


def apply(images: list[Image], filters: Sequence[tuple[str, str]], store: ImageStore) -> list[Image]:
    """Filters of one key are OR-ed, different keys AND-ed, as Docker's."""
    by_key: dict[str, list[str]] = {}
    for key, value in filters:
        if key not in SUPPORTED:
            raise InvalidArgument(f"invalid filter '{key}'", reason=UNSUPPORTED_FILTER)
        by_key.setdefault(key, []).append(value)
    out = images
    for value in by_key.get("dangling", [])[:1]:
        if value.lower() not in ("true", "false", "1", "0"):
            raise InvalidArgument(f"invalid filter 'dangling={value}'", reason=UNSUPPORTED_FILTER)
        want = value.lower() in ("true", "1")
        out = [i for i in out if (not i.repo_tags) == want]
    if "reference" in by_key:
        kept = []
        for i in out:
            tags = [t for t in i.repo_tags if any(_ref_match(t, p) for p in by_key["reference"])]
            if tags:
                kept.append(replace(i, repo_tags=tags))
        out = kept
    for key in ("before", "since"):
        for value in by_key.get(key, []):
            ref = store.get(value)
            if key == "before":
                out = [i for i in out if i.created < ref.created]
            else:
                out = [i for i in out if i.created > ref.created]
    for value in by_key.get("label", []):
        k, sep, v = value.partition("=")
        out = [i for i in out
               if k in ((i.config.get("config") or {}).get("Labels") or {})
               and (not sep or (i.config["config"]["Labels"][k] == v))]
    return out
