"""token-classification, engine half: a tag per word read at its first sub-word, scored by seqeval's entity F1."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoModelForTokenClassification, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from models.bio_tags import OUTSIDE_TAG
from models.tasks.jsonl_records import iter_jsonl_records
from models.tasks.text_classification import DataFormat
from models.tasks.token_classification import JSONL_EXAMPLE
from worker.training.examples import IGNORED_LABEL, TokenisedExamples, from_lists
from worker.training.run_spec import DataFile, RunSpec
from worker.training.speedups.model_pool import Template, TemplateKey
from worker.training.tasks.entity_scoring import EntityScores
from worker.training.tasks.protocol import Batch, Examples
from worker.training.tasks.task_heads import (
    head_labels,
    label_names,
    labels_head,
    load_with_new_head,
    name_labels,
    template_key,
)
from worker.training.tasks.word_labels import read_labels_from_first_subword, tokenise_words

NO_WORD = -1  # the word id kept for a special token


def iter_tagged_sentences(data_file: DataFile) -> Iterator[tuple[int, list[str], list[str]]]:
    """(line number, words, tags) of each record of a JSONL file `{"tokens": [...], "ner_tags": [...]}`, read
    as validation reads it. Raises ValueError for a file that is not JSONL.
    """
    if data_file.data_format is not DataFormat.jsonl:
        raise ValueError(f"token-classification reads JSONL files, not {data_file.data_format.value}")
    for line_number, record in iter_jsonl_records(data_file.path, example=JSONL_EXAMPLE):
        yield line_number, [str(word) for word in record["tokens"]], [str(tag) for tag in record["ner_tags"]]


def read_gold_tags(data_file: DataFile) -> list[list[str]]:
    """Every sentence's tags, word by word, in file order."""
    return [tags for _, _, tags in iter_tagged_sentences(data_file)]


def byte_level_pre_tokenizers(tokenizer: PreTrainedTokenizerBase) -> list[dict[str, Any]]:
    """The tokenizer's ByteLevel pre-tokenizers (RoBERTa, GPT-2), found alone or inside a Sequence."""
    found: list[dict[str, Any]] = []
    pending = [json.loads(tokenizer.backend_tokenizer.to_str()).get("pre_tokenizer")]
    while pending:
        settings = pending.pop()
        if isinstance(settings, dict):
            if settings.get("type") == "ByteLevel":
                found.append(settings)
            pending.extend(settings.get("pretokenizers", []))
    return found


def load_word_tokenizer(location: str, trust_remote_code: bool) -> PreTrainedTokenizerBase:
    """The base model's fast tokenizer, made to take pre-split words.

    A byte-level BPE tokenizer marks a word's start by the space before it; pre-split words have
    none, so without `add_prefix_space=True` every word after the first would be cut as if glued
    to the one before. Raises ValueError for a slow tokenizer (it reports no word ids), or a
    byte-level one that ignores the setting.
    """
    tokenizer = AutoTokenizer.from_pretrained(location, trust_remote_code=trust_remote_code)
    if not tokenizer.is_fast:
        raise ValueError(f"{type(tokenizer).__name__} is a slow tokenizer; word alignment needs a fast one")
    if byte_level_pre_tokenizers(tokenizer):
        tokenizer = AutoTokenizer.from_pretrained(location, trust_remote_code=trust_remote_code, add_prefix_space=True)
        if not all(settings.get("add_prefix_space") for settings in byte_level_pre_tokenizers(tokenizer)):
            raise ValueError(f"{type(tokenizer).__name__} is byte-level but ignores add_prefix_space=True")
    return tokenizer


class EntityEvaluator:
    """Streams a batch's predictions at the words' first sub-words into seqeval-exact entity scores.

    A word whose tokens truncation cut off is predicted "O" (word_labels documents why); the gold
    tags come from the file itself, so such words still count.
    """

    def __init__(self, examples: TokenisedExamples, gold_tags: list[list[str]], tags: list[str]) -> None:
        if len(gold_tags) != len(examples):
            raise ValueError(f"{len(gold_tags)} gold sentences for {len(examples)} examples")
        self.offsets = examples.offsets.tolist()
        self.word_ids = examples.side_token_fields["word_ids"]
        self.first_subword = examples.token_fields["labels"] != IGNORED_LABEL
        self.gold_tags = gold_tags
        self.tag_of_id = [*tags, OUTSIDE_TAG]  # the extra id: a word left without a token
        self.scores = EntityScores()

    def update(self, indices: list[int], batch: Batch, outputs: Any) -> None:
        first_subword = batch["labels"] != IGNORED_LABEL
        predicted = outputs.logits[first_subword].argmax(dim=-1).cpu()  # row by row, as the mask lists them
        per_row = first_subword.sum(dim=1).cpu().tolist()
        gold: list[list[str]] = []
        guessed: list[list[str]] = []
        for index, row_predictions in zip(indices, torch.split(predicted, per_row), strict=True):
            start, end = self.offsets[index], self.offsets[index + 1]
            word_ids = self.word_ids[start:end][self.first_subword[start:end]].tolist()
            word_label_ids = read_labels_from_first_subword(
                word_ids,
                row_predictions.tolist(),
                word_count=len(self.gold_tags[index]),
                outside_label_id=len(self.tag_of_id) - 1,
            )
            gold.append(self.gold_tags[index])
            guessed.append([self.tag_of_id[label_id] for label_id in word_label_ids])
        self.scores.add(gold, guessed)

    def compute(self) -> dict[str, float]:
        """precision, recall, f1 (entity-level, micro), accuracy (per word) and f1_<type> per entity type."""
        return self.scores.compute()


class TokenClassification:
    label_fields: tuple[str, ...] = ("labels",)
    reads_every_token: bool = True

    def load_processor(self, spec: RunSpec) -> PreTrainedTokenizerBase:
        return load_word_tokenizer(spec.base_model_location, spec.trust_remote_code)

    def template_key(self, spec: RunSpec, fingerprint: str) -> TemplateKey:
        return template_key(spec, fingerprint, labels_head(spec))

    def load_template(self, key: TemplateKey) -> Template:
        return load_with_new_head(AutoModelForTokenClassification, key, num_labels=head_labels(key))

    def prepare_network(self, network: PreTrainedModel, spec: RunSpec) -> None:
        name_labels(network, spec)

    def build_examples(self, data_file: DataFile, processor: Any, spec: RunSpec) -> TokenisedExamples:
        """Labels on each word's first sub-word (-100 elsewhere); word ids kept beside, for the evaluator.

        Raises ValueError naming the line of a tag that is not among the job's labels.
        """
        tokenizer: PreTrainedTokenizerBase = processor
        label_ids = {name: index for index, name in enumerate(label_names(spec))}
        sentences: list[list[str]] = []
        word_label_ids: list[list[int]] = []
        for line_number, words, tags in iter_tagged_sentences(data_file):
            unknown = [tag for tag in tags if tag not in label_ids]
            if unknown:
                raise ValueError(f"line {line_number}: tag {unknown[0]!r} is not among the job's labels")
            sentences.append(words)
            word_label_ids.append([label_ids[tag] for tag in tags])
        tokenised = tokenise_words(tokenizer, sentences, word_label_ids, max_length=spec.hyperparameters.max_length)
        return from_lists(
            tokenised.token_fields(),
            {},
            pad_values={"input_ids": tokenizer.pad_token_id or 0, "labels": IGNORED_LABEL},
            padding_side="left" if tokenizer.padding_side == "left" else "right",
            side_token_fields={
                "word_ids": [[NO_WORD if word is None else word for word in ids] for ids in tokenised.word_ids]
            },
        )

    def loss_step(self, network: nn.Module, batch: Batch) -> tuple[torch.Tensor, Any]:
        outputs = network(**batch)
        return outputs.loss, outputs

    def evaluator(self, examples: Examples, spec: RunSpec) -> EntityEvaluator:
        if not isinstance(examples, TokenisedExamples) or spec.validation_file is None:
            raise ValueError("token-classification evaluates the token examples of a validation file")
        return EntityEvaluator(examples, read_gold_tags(spec.validation_file), label_names(spec))

    def save_extras(self, folder: Path, network: nn.Module, processor: Any) -> None:
        processor.save_pretrained(folder)
