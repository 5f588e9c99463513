"""Purge requests: parsed from the admin API's JSON and applied to a store.

``{"tags": [...]}``, ``{"prefix": "/p"}`` (a path prefix, on every host) or
``{"keys": [...]}`` (cache keys as ``X-Weaver-Key`` and logs show them), with
``"soft": true`` to mark entries stale (revalidated on the next request) instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from weaver.cache.errors import BadPurge
from weaver.cache.keys import key_path, normalise_path
from weaver.cache.store import Store


@dataclass(frozen=True, slots=True)
class PurgeRequest:
    keys: tuple[str, ...] = ()
    prefix: str | None = None
    tags: tuple[str, ...] = ()
    is_soft: bool = False


def _strings(body: dict[str, object], field: str) -> tuple[str, ...]:
    value = body.get(field, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise BadPurge(f'"{field}" must be a list of non-empty strings')
    return tuple(value)


def parse_purge_body(data: bytes) -> PurgeRequest:
    """Raises:
    BadPurge: not a JSON object, an unknown field, a field of the wrong type, or nothing
        to purge; the message names the field.
    """
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BadPurge(f"the body is not JSON ({exc})") from None
    if not isinstance(body, dict):
        raise BadPurge('the body must be a JSON object: {"tags"|"prefix"|"keys": …}')
    unknown = sorted(set(body) - {"tags", "prefix", "keys", "soft"})
    if unknown:
        raise BadPurge(f'unknown field "{unknown[0]}" (expected tags, prefix, keys, soft)')
    prefix = body.get("prefix")
    if prefix is not None and (not isinstance(prefix, str) or not prefix.startswith("/")):
        raise BadPurge('"prefix" must be a path starting with "/"')
    soft = body.get("soft", False)
    if not isinstance(soft, bool):
        raise BadPurge('"soft" must be true or false')
    request = PurgeRequest(
        keys=_strings(body, "keys"), prefix=prefix, tags=_strings(body, "tags"), is_soft=soft
    )
    if not (request.keys or request.prefix or request.tags):
        raise BadPurge('nothing to purge: give "tags", "prefix" or "keys"')
    return request


async def apply(store: Store, request: PurgeRequest) -> int:
    """Purge what ``request`` names; returns how many entries were purged."""
    count = 0
    if request.keys:
        count += await store.purge_keys(request.keys, soft=request.is_soft)
    if request.prefix is not None:
        prefix = normalise_path(request.prefix)
        keys = [k for k in await store.keys() if key_path(k).startswith(prefix)]
        count += await store.purge_keys(keys, soft=request.is_soft)
    if request.tags:
        count += await store.purge_tags(request.tags, soft=request.is_soft)
    return count
