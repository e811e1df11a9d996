"""Public object ids in OpenAI's style: a type prefix and a random suffix."""

from __future__ import annotations

import secrets
from enum import StrEnum

_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_SUFFIX_LENGTH = 24  # 62^24 ≈ 10^43: collisions are not a practical concern


class IdPrefix(StrEnum):
    file = "file"
    job = "ftjob"
    event = "ftevent"
    checkpoint = "ftckpt"
    tenant = "tenant"
    api_key = "key"
    artifact = "ftart"
    webhook = "wh"
    webhook_event = "evt"  # a notification: the body's id and the `webhook-id` header of every delivery of it


def new_id(prefix: IdPrefix) -> str:
    suffix = "".join(secrets.choice(_ALPHABET) for _ in range(_SUFFIX_LENGTH))
    return f"{prefix}-{suffix}"


def is_well_formed(object_id: str, prefix: IdPrefix) -> bool:
    """True when `object_id` could have come from `new_id(prefix)`; used to reject garbage cursors."""
    head, _, suffix = object_id.partition("-")
    return head == prefix.value and len(suffix) == _SUFFIX_LENGTH and all(c in _ALPHABET for c in suffix)
