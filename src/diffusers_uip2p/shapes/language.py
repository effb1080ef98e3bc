"""Reading the Shapes world's language: captions back into scenes, instructions applied to scenes.

Both are exact inverses of what `Scene.caption` and the edit templates write. Words outside the world's
vocabulary raise a `ValueError` that lists the vocabulary.
"""

from __future__ import annotations

import functools
import re
from dataclasses import replace

from .edits import DIRECTION_PHRASE, DIRECTIONS, STYLE_TARGET, TEMPLATES
from .scenes import (
    BACKGROUNDS,
    COLOURS,
    COLUMNS,
    PATTERNS,
    ROWS,
    SHAPES,
    SIZES,
    STYLE_PHRASES,
    TURNED_WORD,
    Scene,
    ShapeObject,
    check_word,
)

_PLACES = {"in the center": (1, 1)}
_PLACES.update({f"on the {c}": (1, j) for j, c in enumerate(COLUMNS) if c != "center"})
_PLACES.update({f"at the {r}": (i, 1) for i, r in enumerate(ROWS) if r != "middle"})
_PLACES.update({f"at the {r} {c}": (i, j) for i, r in enumerate(ROWS) for j, c in enumerate(COLUMNS)
                if r != "middle" and c != "center"})
_PLACE_RE = "|".join(sorted(map(re.escape, _PLACES), key=len, reverse=True))
_OBJECT_RE = re.compile(rf"(?:an? )?(?P<size>\w+) (?:(?P<turned>upside-down|tilted) )?(?P<colour>\w+) (?P<shape>\w+) "
                        rf"(?P<place>{_PLACE_RE})$")


def parse_object(text: str) -> ShapeObject:
    """"a small red circle at the top left" → ShapeObject."""
    match = _OBJECT_RE.match(text.strip())
    if not match:
        raise ValueError(f"Cannot read an object from {text!r}; expected e.g. 'a small red circle at the top left'.")
    shape = check_word("shape", match["shape"], SHAPES)
    turned = match["turned"] is not None
    if turned and TURNED_WORD.get(shape) != match["turned"]:
        raise ValueError(f"A {shape} cannot be {match['turned']}.")
    row, column = _PLACES[match["place"]]
    return ShapeObject(shape, check_word("colour", match["colour"], COLOURS), check_word("size", match["size"], SIZES),
                       row, column, turned)


def parse_caption(caption: str) -> Scene:
    """Invert `Scene.caption`: the scene a caption describes."""
    text = caption.strip()
    style = "filled"
    for name, phrase in STYLE_PHRASES.items():
        if phrase and text.startswith(phrase):
            style, text = name, text[len(phrase):]
    match = re.match(r"(?P<objects>.+) on an? (?:(?P<pattern>\w+) )?(?P<background>\w+) background$", text)
    if not match:
        raise ValueError(f"Cannot read a scene from {caption!r}; expected '<objects> on a <colour> background'.")
    pieces = re.split(r", | and (?=an? )", match["objects"])
    objects = tuple(parse_object(piece) for piece in pieces)
    pattern = check_word("background pattern", match["pattern"] or "plain", PATTERNS)
    return Scene(objects, check_word("background colour", match["background"], BACKGROUNDS), pattern, style)


# --- instructions --------------------------------------------------------------------------------------

# Directions as the templates write them, and the synonyms a person types ("move the circle left").
DIRECTION_WORDS = {**{phrase: d for d, phrase in DIRECTION_PHRASE.items()},
                   "left": "left", "right": "right", "upwards": "up", "downwards": "down"}
# An object: "red circle", or when only one object fits, "circle", "red", "red one", "red shape".
_NAME = r"\w+(?: \w+)?"
_SLOTS = {
    "name": rf"(?P<name>{_NAME})",
    "shape": r"(?P<shape>\w+)",
    "colour": r"(?P<colour>\w+)",
    "size": r"(?P<size>\w+)",
    "direction": "(?P<direction>" + "|".join(sorted(DIRECTION_WORDS, key=len, reverse=True)) + ")",
    "background": r"(?P<background>\w+)",
    "object": r"(?P<object>.+)",
    "style": "(?P<style>" + "|".join(map(re.escape, STYLE_TARGET.values())) + ")",
    "turn": rf"(?P<turn>(?:turn the {_NAME} upside down|tilt the {_NAME}|straighten the {_NAME}))",
}
ONE_WORDS = ("one", "shape", "object")  # "the red one"
# Words `canonical_instruction` accepts and rewrites away: they never reach a model.
FORGIVEN_WORDS = frozenset({*ONE_WORDS, *(w for phrase in DIRECTION_WORDS for w in phrase.split())})


def _template_regex(template: str) -> re.Pattern:
    """A template's literal text escaped ("a" also matching "an"), its {slots} as named groups."""
    parts = re.split(r"(\{\w+\})", template)
    regex = "".join(_SLOTS[p[1:-1]] if p.startswith("{") else re.escape(p).replace(r"a\ ", r"an?\ ") for p in parts)
    return re.compile(regex + "$")


_INSTRUCTIONS = [(kind, template, _template_regex(template)) for kind, templates in TEMPLATES.items()
                 for template in templates]


def _name(scene: Scene, name: str) -> ShapeObject:
    """The object ``name`` refers to: "red circle", or one word (a shape or a colour, optionally followed by
    "one"/"shape"/"object") when exactly one object fits; an ambiguous one is refused with the candidates."""
    words = name.split(" ")
    if len(words) == 2 and words[1] not in ONE_WORDS:
        check_word("colour", words[0], COLOURS)
        check_word("shape", words[1], SHAPES)
        return scene.find(name)
    word = words[0]
    if word in SHAPES:
        fits = [o for o in scene.objects if o.shape == word]
    else:
        fits = [o for o in scene.objects if o.colour == check_word("colour or shape", word, {*COLOURS, *SHAPES})]
    if len(fits) != 1:
        present = ", ".join(f"the {o.name}" for o in scene.objects)
        raise ValueError(f"'the {name}' names {len(fits) or 'no'} object{'s' if len(fits) != 1 else ''} in this "
                         f"scene; name one by colour and shape: {', '.join(f'the {o.name}' for o in fits) or present}.")
    return fits[0]


def _normalise(instruction: str) -> str:
    """Case, surrounding space and punctuation other than the templates' one comma do not matter."""
    text = re.sub(r"[.!?;:\"']+", " ", instruction.lower())
    return re.sub(r"\s+", " ", text).strip().replace(" ,", ",")


def _match(scene: Scene, instruction: str):
    """(kind, template, words, result) of the first template whose words make sense on ``scene``."""
    text = _normalise(instruction)
    errors = []
    for kind, template, regex in _INSTRUCTIONS:
        match = regex.match(text)
        if match:
            try:
                return kind, template, match.groupdict(), _apply(scene, kind, match.groupdict())
            except ValueError as error:
                errors.append(error)
    if errors:
        raise errors[0]
    raise ValueError(f"Cannot follow {instruction!r}; phrasings it can follow, e.g.: {'; '.join(examples(scene))}.")


def apply_instruction(scene: Scene, instruction: str) -> Scene:
    """The scene that results from following ``instruction``: any phrasing the edit templates produce, in
    any case and punctuation, with an object named by colour and shape, or by one of them where that is
    unambiguous, and "left"/"right"/"upwards"/"downwards" for the templates' directions.

    Phrasings overlap ("make the red circle large|blue"), so every matching template is tried and the
    first whose words make sense wins; otherwise the first error (e.g. an unknown colour) is raised."""
    return _match(scene, instruction)[3]


def canonical_instruction(scene: Scene, instruction: str) -> str:
    """``instruction`` written the way the edit templates write it (the phrasing the Shapes editors were
    trained on): "Make the circle BLUE!" → "make the red circle blue" on a scene with one circle."""
    kind, template, words, _ = _match(scene, instruction)
    filled = dict(words)
    if words.get("name"):
        filled["name"] = _name(scene, words["name"]).name
    if words.get("direction"):
        filled["direction"] = DIRECTION_PHRASE[DIRECTION_WORDS[words["direction"]]]
    if words.get("turn"):
        rest = words["turn"].split(" ", 1)[1]  # after the verb
        name = re.match(rf"the ({_NAME}?)(?: upside down)?$", rest)[1]
        filled["turn"] = words["turn"].replace(f"the {name}", f"the {_name(scene, name).name}", 1)
    text = template.format(**{key: value for key, value in filled.items() if value is not None})
    return re.sub(r"\ba (?=[aeiou])", "an ", text)  # the templates' "a" reads "an" before a vowel


def examples(scene: Scene) -> list[str]:
    """One concrete instruction per edit kind on ``scene`` (the phrasing help shows these, not templates)."""
    obj = scene.objects[0] if scene.objects else None
    name = obj.name if obj else "red circle"
    values = {"name": name, "shape": next(s for s in sorted(SHAPES) if not obj or s != obj.shape),
              "colour": next(c for c in sorted(COLOURS) if not obj or c != obj.colour),
              "size": "large" if obj and obj.size == "small" else "small", "direction": "to the left",
              "background": sorted(BACKGROUNDS)[0], "object": "small blue square at the top left",
              "style": next(iter(STYLE_TARGET.values())), "turn": f"tilt the {name}"}
    return [templates[0].format(**values) for templates in TEMPLATES.values()]


_VOCABULARY = {"colour": ("colour", COLOURS), "shape": ("shape", SHAPES), "size": ("size", SIZES)}


def _apply(scene: Scene, kind: str, words: dict) -> Scene:
    for key, (kind_name, vocabulary) in _VOCABULARY.items():  # unknown words first, then the scene
        if words.get(key) is not None:
            check_word(kind_name, words[key], vocabulary)
    if kind == "rotate":
        turn = words["turn"]
        obj = _name(scene, re.match(rf"\w+ the ({_NAME}?)(?: upside down)?$", turn)[1])
        wants_turned = {"tilt": True, "straighten": False}.get(turn.split()[0], not obj.turned)
        if wants_turned == obj.turned:
            raise ValueError(f"The {obj.name} is already {'turned' if obj.turned else 'upright'}.")
        return scene.with_object(obj, replace(obj, turned=wants_turned))
    if kind == "background":
        word = words["background"]
        if word in PATTERNS:
            return replace(scene, pattern=word)
        return replace(scene, background=check_word("background colour or pattern", word, {*BACKGROUNDS, *PATTERNS}))
    if kind == "add":
        return replace(scene, objects=scene.objects + (parse_object(words["object"]),))
    if kind == "style":
        return replace(scene, style={v: k for k, v in STYLE_TARGET.items()}[words["style"]])
    obj = _name(scene, words["name"])
    if kind == "shape_swap":
        colour = words.get("colour") or obj.colour
        if colour != obj.colour:
            raise ValueError(f"'{words['name']}' cannot become a {colour} {words['shape']} in a shape swap.")
        return scene.with_object(obj, replace(obj, shape=check_word("shape", words["shape"], SHAPES), turned=False))
    if kind == "colour_change":
        return scene.with_object(obj, replace(obj, colour=check_word("colour", words["colour"], COLOURS)))
    if kind == "move":
        direction = DIRECTION_WORDS[words["direction"]]
        dr, dc = DIRECTIONS[direction]
        return scene.with_object(obj, replace(obj, row=obj.row + dr, column=obj.column + dc))
    if kind == "resize":
        return scene.with_object(obj, replace(obj, size=check_word("size", words["size"], SIZES)))
    return scene.with_object(obj, None)  # remove


# --- vocabulary ----------------------------------------------------------------------------------------

_WORDS = re.compile(r"[a-z]+")


@functools.lru_cache(maxsize=1)
def vocabulary() -> frozenset[str]:
    """Every word a Shapes caption or instruction can use, read off the tables that write them."""
    texts = [*COLOURS, *BACKGROUNDS, *SHAPES, *SIZES, *PATTERNS, *TURNED_WORD.values(), *STYLE_PHRASES.values(),
             *STYLE_TARGET.values(), *DIRECTION_PHRASE.values(), *_PLACES, "turn upside down tilt straighten",
             *(re.sub(r"\{\w+\}", "", t) for ts in TEMPLATES.values() for t in ts), "a an and on background"]
    return frozenset(word for text in texts for word in _WORDS.findall(text.lower()) )


def check_vocabulary(text: str, argument: str, allowed: frozenset[str] = frozenset()) -> str:
    """``text`` unchanged if every word is one the Shapes world knows (or is in ``allowed``); otherwise a
    ValueError that names ``argument``, the unknown words and the vocabulary (the shipped Shapes models know
    no other word)."""
    unknown = sorted({word for word in _WORDS.findall(text.lower()) if word not in vocabulary() | allowed})
    if unknown:
        groups = {"colours": COLOURS, "background colours": BACKGROUNDS, "shapes": SHAPES, "sizes": SIZES,
                  "patterns": PATTERNS}
        listed = "; ".join(f"{name}: {', '.join(sorted(words))}" for name, words in groups.items())
        named = set().union(*map(set, groups.values()))
        other = ", ".join(sorted(vocabulary() - named))
        raise ValueError(f"{argument} has words the Shapes world does not know: {', '.join(unknown)}. The Shapes "
                         f"models know only its vocabulary ({listed}; other words: {other}).")
    return text
