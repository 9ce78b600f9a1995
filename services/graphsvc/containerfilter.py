"""``ps --filter`` keys answered from the GraphDB: name, id, label, ancestor.

Docker's rules: values of one key are OR-ed, keys are AND-ed, except ``label``, where
every value must match (``label=a`` and ``label=b`` select containers with both).
``ancestor`` takes an image reference or id and selects containers made from that image
or from an image whose parent chain (``commit``) leads to it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from skiff.common.errors import UNSUPPORTED_FILTER, InvalidArgument, NotFound
from skiff.graphsvc.graphdb import ContainerRecord
from skiff.graphsvc.images import ImageStore

KEYS = ("name", "id", "label", "ancestor")
Predicate = Callable[[ContainerRecord], bool]


def _label(values: list[str]) -> Predicate:
    wanted = [v.partition("=") for v in values]

    def match(r: ContainerRecord) -> bool:
        return all(key in r.labels and (not sep or r.labels[key] == value) for key, sep, value in wanted)
    return match


def _name(values: list[str]) -> Predicate:
    try:
        patterns = [re.compile(v) for v in values]
    except re.error as err:
        raise InvalidArgument(f"invalid filter 'name': {err}") from None
    return lambda r: any(p.search(r.name) for p in patterns)


def _id(values: list[str]) -> Predicate:
    return lambda r: any(r.id.startswith(v) for v in values)


def _ancestor(values: list[str], images: ImageStore) -> Predicate:
    wanted = set()
    for value in values:
        try:
            wanted.add(images.get(value).id)
        except NotFound:
            raise NotFound(f"No such image: {value}", reason="IMAGE_NOT_FOUND") from None
    chains: dict[str, bool] = {}

    def descends(image_id: str) -> bool:
        if image_id not in chains:
            seen: set[str] = set()
            current, found = image_id, False
            while current and current not in seen and len(seen) < 1000:
                if current in wanted:
                    found = True
                    break
                seen.add(current)
                try:
                    parent = images.get(current).config.get("parent")
                except NotFound:
                    break
                current = parent if isinstance(parent, str) else ""
            chains[image_id] = found
        return chains[image_id]
    return lambda r: descends(r.image_id)


def compile_filters(filters: Iterable[tuple[str, str]], images: ImageStore) -> Predicate:
    by_key: dict[str, list[str]] = {}
    for key, value in filters:
        if key not in KEYS:
            raise InvalidArgument(f"unsupported filter {key!r}: use one of {', '.join(KEYS)}",
                                  reason=UNSUPPORTED_FILTER)
        by_key.setdefault(key, []).append(value)
    tests: list[Predicate] = []
    for key, values in by_key.items():
        if key == "ancestor":
            tests.append(_ancestor(values, images))
        else:
            tests.append({"name": _name, "id": _id, "label": _label}[key](values))
    return lambda r: all(t(r) for t in tests)
