"""The DSI paper's five edit tasks (§4.3) and the editing method that suits each (its Table 5 routing)."""

from __future__ import annotations

EDIT_TASKS = ("object_replacement", "action_editing", "scene_editing", "object_adding", "style_editing")

# P2P keeps the layout and swaps what the words point at; MasaCtrl keeps identity through self-attention
# while the layout changes; SDEdit re-noises partway so new content (an object, a style) can appear.
DEFAULT_TASK_METHODS = {
    "object_replacement": "p2p",
    "action_editing": "masactrl",
    "scene_editing": "p2p",
    "object_adding": "sdedit",
    "style_editing": "sdedit",
}


def check_task(task: str, argument: str = "task") -> str:
    if task not in EDIT_TASKS:
        raise ValueError(f"`{argument}` must be one of {', '.join(EDIT_TASKS)}, got {task!r}.")
    return task
