"""Pretrained task networks kept in memory, so a job starts from a copy instead of a load.

A template is the base model with the task's head, loaded once; a job gets a deep copy whose new
parameters (those the checkpoint lacked: the head) are initialised afresh from the job's seed.
The copy is made the same way whether the template was loaded a moment ago or long before, so a
job trains identically on a cold and on a warm worker.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import dataclass

from transformers import PreTrainedModel


@dataclass(frozen=True)
class TemplateKey:
    """What a template depends on. `head` is the task's description of its head (say `labels=13`): label
    names only go into the copy's config, so jobs with as many labels share a template."""

    task: str
    location: str
    fingerprint: str
    head: str
    trust_remote_code: bool


@dataclass
class Template:
    network: PreTrainedModel
    new_modules: list[str]  # modules holding parameters the checkpoint did not have


class ModelPool:
    """The `capacity` most recently used templates of this process."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._templates: OrderedDict[TemplateKey, Template] = OrderedDict()

    def __contains__(self, key: TemplateKey) -> bool:
        return key in self._templates

    def get(self, key: TemplateKey) -> Template | None:
        template = self._templates.get(key)
        if template is not None:
            self._templates.move_to_end(key)
        return template

    def add(self, key: TemplateKey, template: Template) -> None:
        if self.capacity <= 0:
            return
        self._templates[key] = template
        self._templates.move_to_end(key)
        while len(self._templates) > self.capacity:
            self._templates.popitem(last=False)


def job_network(template: Template, *, keep_template: bool) -> PreTrainedModel:
    """A network for one job: a copy of the template (or, when the pool won't keep it, the template itself)
    with its new modules initialised from the global RNG, which the caller seeds first.
    """
    network = copy.deepcopy(template.network) if keep_template else template.network
    initialise_new_modules(network, template.new_modules)
    return network


def initialise_new_modules(network: PreTrainedModel, names: list[str]) -> None:
    for name in names:
        network._init_weights(network.get_submodule(name))


def new_module_names(missing_keys: set[str] | list[str]) -> list[str]:
    """The modules owning the parameters a checkpoint did not provide, in a fixed order."""
    return sorted({key.rpartition(".")[0] for key in missing_keys})
