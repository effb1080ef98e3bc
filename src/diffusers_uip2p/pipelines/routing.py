"""``edit_method="auto"``: caption the image if needed, decide the edit task, map the task to a method.

The DSI paper's pipeline (§4.3): BLIP writes the source prompt, the task classifier reads the (source,
target) pair, and the task picks the method (its Table 5). Without classifier weights the word-level rules
of `classify_by_rules` decide. Every step is recorded in the output, so the choice can be checked.
"""

from __future__ import annotations

from dataclasses import dataclass

import PIL.Image

from ..classifier import DEFAULT_TASK_METHODS, EDIT_TASKS, EditTaskClassifier, check_task, classify_by_rules
from .editing import EDIT_METHODS


@dataclass
class EditRoute:
    task: str
    method: str
    probabilities: dict[str, float] | None = None  # from the classifier
    rule: str | None = None  # from the fallback rules


def task_method_table(task_methods: dict[str, str] | str | None, shipped: dict[str, str] | None = None
                      ) -> dict[str, str]:
    """The task → method table: the paper's, then the pipeline's ``shipped`` table (chosen on a validation
    split), then the user's overrides; ``task_methods="paper"`` is the paper's table alone."""
    if task_methods == "paper":
        return dict(DEFAULT_TASK_METHODS)
    if isinstance(task_methods, str):
        raise ValueError(f"`task_methods` must be a dict of task → method or 'paper', got {task_methods!r}.")
    table = dict(DEFAULT_TASK_METHODS)
    for task, method in {**(shipped or {}), **(task_methods or {})}.items():
        check_task(task, "task_methods")
        if method not in EDIT_METHODS:
            raise ValueError(f"`task_methods[{task!r}]` must be one of {', '.join(EDIT_METHODS)}, got {method!r}.")
        table[task] = method
    return table


def route_edit(source: str, target: str, table: dict[str, str], classifier: EditTaskClassifier | None,
               text_encoder, tokenizer) -> EditRoute:
    if classifier is None:
        decision = classify_by_rules(source, target)
        return EditRoute(decision.task, table[decision.task], rule=decision.rule)
    prediction = classifier.predict(source, target, text_encoder, tokenizer)
    task = prediction.labels[0]
    if task not in EDIT_TASKS:
        raise ValueError(f"The task classifier predicted {task!r}, which is not one of {', '.join(EDIT_TASKS)}.")
    return EditRoute(task, table[task], probabilities=prediction.as_dicts()[0])


def caption_image(captioner, caption_processor, image: PIL.Image.Image, max_new_tokens: int = 40) -> str:
    """BLIP's caption of ``image``: the source prompt when the user gives none."""
    inputs = caption_processor(images=image, return_tensors="pt").to(captioner.device, captioner.dtype)
    ids = captioner.generate(**inputs, max_new_tokens=max_new_tokens)
    caption = caption_processor.decode(ids[0], skip_special_tokens=True).strip()
    if not caption:
        raise ValueError("The captioner returned an empty caption; give `source_prompt` yourself.")
    return caption
