from __future__ import annotations

import json

import pytest

from models.bio_tags import bio_tag_fault, check_bio_tags
from tests.conftest import SHARED_DATA


def test_the_wnut17_tag_set_is_bio() -> None:
    tags = {
        tag
        for split in ("train", "validation")
        for line in (SHARED_DATA / "wnut17" / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
        for tag in json.loads(line)["ner_tags"]
    }
    assert len(tags) == 13  # O, then B- and I- of six types
    assert check_bio_tags(sorted(tags)) is None


@pytest.mark.parametrize("tag", ["O", "B-PER", "I-PER", "B-cell_line", "I-geo-nam", "B-art.", "B-Straße", "B-人名"])
def test_letters_digits_and_three_punctuation_marks_make_a_type(tag: str) -> None:
    assert bio_tag_fault(tag) is None


@pytest.mark.parametrize(
    ("tag", "fault"),
    [
        ("PER", "tag 'PER' is not a BIO tag; a tag is 'O' (outside any entity), 'B-<type>' (an entity's first word)"),
        ("o", "tag 'o' is not a BIO tag"),
        ("", "tag '' is not a BIO tag"),
        ("b-PER", "tag 'b-PER' is not a BIO tag"),
        ("B_PER", "tag 'B_PER' is not a BIO tag"),
        ("B", "tag 'B' names no entity type; write it as 'B-<type>', such as 'B-person'"),
        ("I", "tag 'I' names no entity type; write it as 'I-<type>'"),
        ("B-", "tag 'B-' names no entity type after 'B-'; write it as 'B-<type>', such as 'B-person'"),
        ("E-PER", "tag 'E-PER' belongs to the IOBES scheme; tags follow the BIO scheme"),
        ("S-PER", "tag 'S-PER' belongs to the IOBES scheme"),
        ("B-creative work", "tag 'B-creative work' has an entity type with characters other than letters, digits"),
        ("I-a,b", "tag 'I-a,b' has an entity type with characters other than"),
        ('B-say"hi"', "tag 'B-say\"hi\"' has an entity type with characters other than"),
        ("B-x\ny", "tag 'B-x\\ny' has an entity type with characters other than"),
    ],
)
def test_a_tag_outside_the_bio_grammar_is_named_with_its_fault(tag: str, fault: str) -> None:
    found = bio_tag_fault(tag)
    assert found is not None
    assert found.startswith(fault)


def test_the_first_faulty_tag_of_a_set_is_reported() -> None:
    assert check_bio_tags(["O", "B-PER", "PER", "LOC"]) == bio_tag_fault("PER")


def test_a_lone_inside_tag_passes_as_conlleval_reads_it_as_a_start() -> None:
    assert check_bio_tags(["O", "I-PER", "I-LOC"]) is None


def test_no_tags_at_all_have_no_fault() -> None:
    assert check_bio_tags([]) is None
