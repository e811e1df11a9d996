"""What the tasks share about their heads: the pool key, loading the base model with a new head, label names."""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedModel

from worker.training.run_spec import RunSpec
from worker.training.speedups.model_pool import Template, TemplateKey, new_module_names

LABELS_HEAD_PREFIX = "labels="


def labels_head(spec: RunSpec) -> str:
    """A labelling head's description in the pool key: jobs with as many labels share a template."""
    return f"{LABELS_HEAD_PREFIX}{len(spec.task_settings['labels'])}"


def head_labels(key: TemplateKey) -> int:
    return int(key.head.removeprefix(LABELS_HEAD_PREFIX))


def template_key(spec: RunSpec, fingerprint: str, head: str) -> TemplateKey:
    return TemplateKey(
        task=spec.task.value,
        location=spec.base_model_location,
        fingerprint=fingerprint,
        head=head,
        trust_remote_code=spec.trust_remote_code,
    )


def load_with_new_head(auto_class: Any, key: TemplateKey, **head_options: Any) -> Template:
    """The base model under `auto_class` (AutoModelFor…), safetensors only; the modules it lacked are the head."""
    network, loading = auto_class.from_pretrained(
        key.location,
        trust_remote_code=key.trust_remote_code,
        use_safetensors=True,
        output_loading_info=True,
        **head_options,
    )
    return Template(network, new_module_names(loading["missing_keys"]))


def label_names(spec: RunSpec) -> list[str]:
    """The job's labels in class-id order, as names (integer labels by their digits)."""
    return [str(label) for label in spec.task_settings["labels"]]


def name_labels(network: PreTrainedModel, spec: RunSpec) -> None:
    """Write the label names into the config, so the export's pipeline speaks them."""
    names = label_names(spec)
    network.config.id2label = dict(enumerate(names))
    network.config.label2id = {name: index for index, name in enumerate(names)}
