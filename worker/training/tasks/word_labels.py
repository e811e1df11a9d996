"""The mapping between word labels and sub-word tokens, made through each word's first sub-word."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from worker.training.examples import IGNORED_LABEL

WordIds = list[int | None]  # per token: the index of the word it comes from, None for a special token


@dataclass(frozen=True)
class TokenisedWords:
    """Sentences of words tokenised in one call; each field holds one list per sentence, in input order.

    `labels` are the word labels aligned by `align_labels_to_first_subword`. `word_counts` are the
    words each sentence had before truncation: what `read_labels_from_first_subword` needs to give
    every word a prediction. `token_type_ids` is None for a tokenizer that makes none (RoBERTa).
    """

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    labels: list[list[int]]
    word_ids: list[WordIds]
    word_counts: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)

    def token_fields(self) -> dict[str, list[list[int]]]:
        """The per-token fields a token-classification network takes, by its argument names."""
        fields = {"input_ids": self.input_ids, "labels": self.labels}
        if self.token_type_ids is not None:
            fields["token_type_ids"] = self.token_type_ids
        return fields


def align_labels_to_first_subword(word_ids: Sequence[int | None], word_label_ids: Sequence[int]) -> list[int]:
    """One label per token: word w's label on w's first token, IGNORED_LABEL (-100) on its later ones and on specials.

    Only the first sub-word carries a label, so each word counts once in the loss whatever its
    length in tokens, and evaluation reads the prediction at the same place. A word cut off by
    truncation has no token, so its label appears nowhere. Raises ValueError when a word id
    falls outside `word_label_ids`.
    """
    labels: list[int] = []
    labelled_words: set[int] = set()
    for word_id in word_ids:
        if word_id is None or word_id in labelled_words:
            labels.append(IGNORED_LABEL)
            continue
        if not 0 <= word_id < len(word_label_ids):
            raise ValueError(f"token of word {word_id}, but the sentence has {len(word_label_ids)} word labels")
        labels.append(word_label_ids[word_id])
        labelled_words.add(word_id)
    return labels


def read_labels_from_first_subword(
    word_ids: Sequence[int | None], token_label_ids: Sequence[int], *, word_count: int, outside_label_id: int
) -> list[int]:
    """One predicted label per word of the sentence (`word_count` of them): the prediction at the word's first token.

    `token_label_ids` are the predicted class ids (the logits' argmax) of this sentence's tokens,
    padding removed, position by position with `word_ids`. A word without a token, because
    truncation cut it off or because the tokenizer made nothing of it (a lone U+FE0F variation
    selector), is predicted `outside_label_id` ("O"): evaluation scores against every gold word,
    so truncation costs recall and never hides an error. Raises ValueError when the two
    sequences differ in length or a word id falls outside `word_count`.
    """
    if len(word_ids) != len(token_label_ids):
        raise ValueError(f"{len(token_label_ids)} token predictions for {len(word_ids)} tokens")
    word_labels = [outside_label_id] * word_count
    read_words: set[int] = set()
    for word_id, label_id in zip(word_ids, token_label_ids, strict=True):
        if word_id is None or word_id in read_words:
            continue
        if not 0 <= word_id < word_count:
            raise ValueError(f"token of word {word_id}, but the sentence has {word_count} words")
        word_labels[word_id] = label_id
        read_words.add(word_id)
    return word_labels


def tokenise_words(
    tokenizer: PreTrainedTokenizerBase,
    sentences: Sequence[Sequence[str]],
    word_label_ids: Sequence[Sequence[int]],
    *,
    max_length: int,
) -> TokenisedWords:
    """Tokenise pre-split sentences with their word labels, truncating each to `max_length` tokens.

    Needs a fast tokenizer (only those report which word each token comes from); a byte-level BPE
    one (RoBERTa, GPT-2) must be loaded with `add_prefix_space=True` to take pre-split words.
    Raises ValueError for a slow tokenizer or a sentence whose word and label counts differ.
    """
    if not tokenizer.is_fast:
        raise ValueError(f"{type(tokenizer).__name__} is a slow tokenizer; word alignment needs a fast one")
    if len(sentences) != len(word_label_ids):
        raise ValueError(f"{len(sentences)} sentences but {len(word_label_ids)} label sequences")
    for index, (words, labels) in enumerate(zip(sentences, word_label_ids, strict=True)):
        if len(words) != len(labels):
            raise ValueError(f"sentence {index} has {len(words)} words but {len(labels)} labels")
    if not sentences:
        # The tokenizer reads an empty batch as one empty sentence.
        return TokenisedWords([], None, [], [], [])
    encoded = tokenizer(
        [list(words) for words in sentences], is_split_into_words=True, truncation=True, max_length=max_length
    )
    word_ids = [encoded.word_ids(index) for index in range(len(sentences))]
    return TokenisedWords(
        input_ids=encoded["input_ids"],
        token_type_ids=encoded.get("token_type_ids"),
        labels=[
            align_labels_to_first_subword(ids, labels) for ids, labels in zip(word_ids, word_label_ids, strict=True)
        ],
        word_ids=word_ids,
        word_counts=[len(words) for words in sentences],
    )
