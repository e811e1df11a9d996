"""Which strings are BIO tags ("O", "B-<type>", "I-<type>"), each fault told in plain English."""

from __future__ import annotations

from collections.abc import Iterable

OUTSIDE_TAG = "O"
BIO_PREFIXES = ("B-", "I-")
TYPE_PUNCTUATION = frozenset("_-.")  # with letters and digits, the characters an entity type may hold
BIO_EXAMPLE = "'O' (outside any entity), 'B-<type>' (an entity's first word) or 'I-<type>' (its later words)"


def bio_tag_fault(tag: str) -> str | None:
    """What makes `tag` unfit as a BIO tag, as a sentence's end ("tag 'X' is …"); None if it is fit.

    An entity type is letters, digits, '_', '-' and '.' only: it becomes part of a metric name
    (`f1_<type>`) written to JSON events and the job's CSV result file, where a comma, quote,
    space or line break would need quoting that not every reader of those files handles.
    """
    if tag == OUTSIDE_TAG:
        return None
    if tag in ("B", "I"):
        return f"tag {tag!r} names no entity type; write it as '{tag}-<type>', such as '{tag}-person'"
    if tag.startswith(("E-", "S-")):
        return (
            f"tag {tag!r} belongs to the IOBES scheme; tags follow the BIO scheme, {BIO_EXAMPLE}: "
            "write 'E-' as 'I-' and 'S-' as 'B-'"
        )
    if not tag.startswith(BIO_PREFIXES):
        return f"tag {tag!r} is not a BIO tag; a tag is {BIO_EXAMPLE}, such as 'B-person'"
    entity_type = tag[2:]
    if not entity_type:
        return f"tag {tag!r} names no entity type after '{tag}'; write it as '{tag}<type>', such as '{tag}person'"
    if not all(character.isalnum() or character in TYPE_PUNCTUATION for character in entity_type):
        return (
            f"tag {tag!r} has an entity type with characters other than letters, digits, '_', '-' and '.'; "
            "the type names a metric, so rename it, such as 'B-creative-work'"
        )
    return None


def check_bio_tags(tags: Iterable[str]) -> str | None:
    """The fault of the first tag in `tags` that is not a BIO tag (see `bio_tag_fault`); None if all are.

    Torch-free and seqeval-free, so the upload validator can call it. It judges tags one by one:
    a set with 'I-x' but no 'B-x' passes, as conlleval reads a lone 'I-x' as an entity's start.
    """
    for tag in tags:
        fault = bio_tag_fault(tag)
        if fault is not None:
            return fault
    return None
