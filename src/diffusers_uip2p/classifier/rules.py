"""The fallback when no classifier weights are loaded: decide the edit task from the words that changed.

The prompts are aligned word by word (difflib); the words the target drops and the words it adds decide
the task through a few ordered rules, and the decision names the rule that fired, so the user can see why
a method was chosen and override it.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from ..checks import check_text

STYLE_WORDS = frozenset("""
    style styled painting painted drawing drawn sketch sketched watercolor watercolour oil pastel acrylic
    charcoal pencil ink cartoon anime manga comic illustration render rendering pixel pixelated art artwork
    photo photograph photorealistic realistic impressionist impressionism cubist cubism surreal surrealist
    abstract baroque renaissance vintage retro noir sepia monochrome mosaic origami claymation lowpoly
    graffiti woodcut engraving ukiyo-e outline outlined filled vector digital poster stained-glass
""".split())
PLACE_PREPOSITIONS = frozenset("in on at under inside near by beside beneath above over across through "
                               "during along around within against".split())
SCENE_WORDS = frozenset("""
    background scene sky night day dawn dusk sunset sunrise noon morning evening midnight twilight winter
    summer autumn fall spring snow snowy rain rainy storm stormy fog foggy mist misty sunny cloudy beach
    forest jungle desert city street park room kitchen bedroom office garden field meadow mountain mountains
    lake river sea ocean space underwater cave village countryside station backdrop landscape weather
    striped checkered plain
""".split())
MOTION_WORDS = frozenset("""
    left right top bottom center centre middle small large big tiny huge bigger smaller tilted upside-down
    turned rotated flipped upright sideways
""".split())  # where an object is, how big and which way it faces: its pose, so action editing
ADDING_WORDS = frozenset({"and", "with", "beside", "next", "holding", "carrying", "wearing", "plus", "together"})
ARTICLES = frozenset({"a", "an", "the", "his", "her", "its", "their", "some"})  # a→the is not an edit
_WORD = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")


@dataclass(frozen=True)
class RuleDecision:
    task: str
    rule: str


def _words(prompt: str) -> list[str]:
    return [word for word in _WORD.findall(prompt.lower()) if word not in ARTICLES]


def _is_verb(word: str) -> bool:
    """An -ing verb: running, sleeping."""
    return len(word) > 4 and word.endswith("ing") and word not in SCENE_WORDS | STYLE_WORDS


def classify_by_rules(source: str, target: str) -> RuleDecision:
    """The task whose rule first matches the word-level difference of ``source`` → ``target``."""
    check_text(source, "source")
    check_text(target, "target")
    source_words, target_words = _words(source), _words(target)
    removed, added, preceding = [], [], set()
    matcher = difflib.SequenceMatcher(a=source_words, b=target_words, autojunk=False)
    for op, a0, a1, b0, b1 in matcher.get_opcodes():
        if op == "equal":
            continue
        removed += source_words[a0:a1]
        added += target_words[b0:b1]
        preceding.update(source_words[max(0, a0 - 2):a0])
    changed = set(removed) | set(added)
    growth = len(added) - len(removed)
    joiners = sorted((set(added) - set(removed)) & ADDING_WORDS)
    verbs, poses = sorted(filter(_is_verb, changed)), sorted(changed & MOTION_WORDS)
    if not changed:
        return RuleDecision("object_replacement", "the prompts have the same words: nothing to tell apart, "
                                                  "so the default task")
    if changed & STYLE_WORDS:
        return RuleDecision("style_editing", f"a style word changed ({', '.join(sorted(changed & STYLE_WORDS))})")
    if changed & SCENE_WORDS:
        return RuleDecision("scene_editing", f"the changed words name a place, time or background "
                                             f"({', '.join(sorted(changed & SCENE_WORDS))})")
    if growth >= 3 or (joiners and growth >= 1):
        return RuleDecision("object_adding", f"the target adds {growth} word{'s' * (growth > 1)}"
                            + (f", joined by '{joiners[0]}'" if joiners else ""))
    if verbs:
        return RuleDecision("action_editing", f"a verb changed ({', '.join(verbs)})")
    if -growth >= 2 and not set(removed) <= MOTION_WORDS:
        return RuleDecision("object_adding", f"the target drops {-growth} words: removing an object, "
                                             "the inverse of adding one")
    if poses:
        return RuleDecision("action_editing", f"a pose word changed ({', '.join(poses)})")
    if preceding & PLACE_PREPOSITIONS:
        return RuleDecision("scene_editing", "the changed words follow a place preposition")
    if not removed or not added:
        return RuleDecision("object_adding", "words were only " + ("added" if not removed else "removed"))
    return RuleDecision("object_replacement", f"the subject's words changed ({' '.join(removed)} → {' '.join(added)})")
