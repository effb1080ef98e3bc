"""Choosing the editing method: the DSI task classifier, its training triples and a rule-based fallback."""

from .modeling import EditTaskClassifier, EditTaskPrediction
from .rules import RuleDecision, classify_by_rules
from .tasks import DEFAULT_TASK_METHODS, EDIT_TASKS, check_task
from .triples import EditTriple, generate_triples, load_triples

__all__ = [
    "DEFAULT_TASK_METHODS",
    "EDIT_TASKS",
    "EditTaskClassifier",
    "EditTaskPrediction",
    "EditTriple",
    "RuleDecision",
    "check_task",
    "classify_by_rules",
    "generate_triples",
    "load_triples",
]
