"""A rule-based reverse instruction for the common edit forms (add, remove, recolour, resize, move, swap,
replace), read off the instruction and the two captions. It needs no LLM and returns None rather than guess,
so a data pipeline can fall back to an LLM (see `instructions.py`) or drop the record."""

from __future__ import annotations

import difflib
import re

from ..classifier.llm_triples import SMART_QUOTES

COLOURS = frozenset("red orange yellow green blue purple pink brown black white gray grey silver gold golden beige "
                    "violet cyan magenta turquoise teal navy maroon".split())
SIZES = frozenset("small large big tiny huge little giant medium".split())
OPPOSITE_DIRECTIONS = {"left": "right", "up": "down", "upward": "downward", "upwards": "downwards",
                       "higher": "lower", "forward": "backward", "forwards": "backwards", "closer": "farther",
                       "clockwise": "counterclockwise", "tilt": "straighten"}
OPPOSITE_DIRECTIONS.update({v: k for k, v in list(OPPOSITE_DIRECTIONS.items())})
OPPOSITE_DIRECTIONS["anticlockwise"] = "clockwise"
_DETERMINERS = {"the", "a", "an", "some", "this", "that", "these", "those"}
_NUMBERS = set("one two three four five six seven eight nine ten several many".split())
_POSSESSIVES = {"his", "her", "its", "their", "my", "your", "our"}
_PRONOUNS = {"it", "him", "her", "them", "he", "she", "they", "this", "that", "everything", "image", "picture",
             "photo", "scene"}
_STOP = _DETERMINERS | _POSSESSIVES | set("and or with on in at to of from by for under behind near next , . ; :"
                                           .split())
_CONNECTORS = {"and", "with", ",", "plus", "while"}
_PLACE_PREPOSITIONS = r"next to|in front of|on top of|beside|behind|under|underneath|above|below|near|on|in|into|" \
                      r"onto|at|to|inside|over|by|around|across|along|between|among"


def _tokens(text: str) -> list[str]:
    return re.findall(r"[\w'-]+|[^\w\s]", text.translate(SMART_QUOTES))


def _lower(tokens: list[str]) -> list[str]:
    return [t.lower() for t in tokens]


def _join(tokens: list[str]) -> str:
    return re.sub(r" ([,.;:!?])", r"\1", " ".join(tokens))


def _bare(phrase: str) -> list[str]:
    """The words of a noun phrase without its leading determiner."""
    words = _tokens(phrase)
    return words[1:] if words and words[0].lower() in _DETERMINERS else words


def _the(phrase: str) -> str:
    words = _tokens(phrase)
    return _join(words) if words and words[0].lower() in _POSSESSIVES else "the " + _join(_bare(phrase))


def _indefinite(words: list[str]) -> str:
    """"a"/"an" + words, or no article for a (likely) plural."""
    head = words[-1].lower()
    if head.endswith("s") and not head.endswith(("ss", "us", "is")):
        return _join(words)
    return ("an " if words[0][0].lower() in "aeiou" else "a ") + _join(words)


def _occurrences(tokens: list[str], words: list[str]) -> list[int]:
    low, want = _lower(tokens), _lower(words)
    return [i for i in range(len(low) - len(want) + 1) if want and low[i:i + len(want)] == want]


def _before(tokens: list[str], start: int, limit: int = 3) -> list[str]:
    """Up to ``limit`` modifier words right before ``start``, stopping at determiners, prepositions, commas."""
    out = []
    for token in reversed(tokens[max(0, start - limit):start]):
        if token.lower() in _STOP:
            break
        out.insert(0, token)
    return out


def _named_once(caption: str, words: list[str]) -> tuple[list[str], int] | None:
    """The caption's tokens and where ``words`` occur, if they occur exactly once."""
    tokens = _tokens(caption)
    found = _occurrences(tokens, words) or _occurrences(tokens, words[-1:])
    return (tokens, found[0]) if len(found) == 1 else None


def _attribute(match: re.Match, input_caption: str, edited_caption: str) -> str | None:
    """"make the red circle blue" → "make the blue circle red": the old value is read from the object's own
    words, else from the input caption right before the object's name; None if it is nowhere to be found."""
    new, words = match["w"].lower(), _bare(match["obj"])
    kind = COLOURS if new in COLOURS else SIZES
    if not words or words[-1].lower() in _PRONOUNS:
        return None
    own = [i for i, w in enumerate(words) if w.lower() in kind]
    if own:
        old = words[own[0]]
        obj = re.sub(rf"\b{re.escape(old)}\b", match["w"], match["obj"], count=1)
    else:
        named = _named_once(input_caption, words)
        old = next((w for w in _before(*named) if w.lower() in kind), None) if named else None
        obj = match["obj"]
    if old is None or old.lower() == new:
        return None
    mid = re.sub(r"\b(to|into)\b", r"back \1", match["mid"])
    return f"{match['verb']} {match['pre'] or ''}{obj}{mid}{old}{match['tail'] or ''}"


def _changed_span(input_caption: str, edited_caption: str):
    """(old tokens, new tokens) spanning where the captions differ, ignoring changed connectors
    (", " → "and" when a list shrinks), or None if they do not differ."""
    old, new = _tokens(input_caption), _tokens(edited_caption)
    ops = [op for op in difflib.SequenceMatcher(None, _lower(old), _lower(new), autojunk=False).get_opcodes()
           if op[0] != "equal" and (_trim(old[op[1]:op[2]], _CONNECTORS) or _trim(new[op[3]:op[4]], _CONNECTORS))]
    if not ops:
        return None
    return old[ops[0][1]:ops[-1][2]], new[ops[0][3]:ops[-1][4]]


def _trim(tokens: list[str], words: set[str]) -> list[str]:
    while tokens and tokens[0].lower() in words:
        tokens = tokens[1:]
    while tokens and tokens[-1].lower() in words:
        tokens = tokens[:-1]
    return tokens


def _removed(match: re.Match, input_caption: str, edited_caption: str) -> str | None:
    """"remove the dog" → "add <the dog's phrase in the input caption>", else "add the dog back"."""
    words = _bare(match["obj"])
    if not words or words[-1].lower() in _PRONOUNS:
        return None
    span = _changed_span(input_caption, edited_caption)
    if span and not _trim(span[1], _CONNECTORS):
        phrase = _trim(span[0], _CONNECTORS)  # a noun phrase naming the object: "a small red circle at the top"
        if (phrase and _lower(phrase)[0] in _DETERMINERS | _NUMBERS and words[-1].lower() in _lower(phrase)
                and "," not in phrase and len(phrase) <= 12):
            return f"add {_join(phrase)}"
    return f"add {_the(match['obj'])} back"


def _added(match: re.Match, input_caption: str, edited_caption: str) -> str | None:
    """"add a ball next to the dog" → "remove the ball"; "put the dog on the floor" moves a known object: None."""
    words, first = _bare(match["obj"]), _tokens(match["obj"])[0].lower()
    if not words or words[-1].lower() in _PRONOUNS or (match["verb"].lower() != "add" and first in
                                                         {"the"} | _POSSESSIVES):
        return None
    return f"remove {_the(match['obj'])}"


def _moved_to(match: re.Match, input_caption: str, edited_caption: str) -> str | None:
    """"move the dog to the floor" → "move the dog back to the couch", the old place read off the captions."""
    span = _changed_span(input_caption, edited_caption)
    head = _bare(match["obj"])[-1:]
    if not span or not head or head[0].lower() in _PRONOUNS or _tokens(match["dest"])[-1].lower() not in \
            _lower(span[1]) or head[0].lower() in _lower(span[0]):
        return None
    place = span[0]
    while place and re.fullmatch(_PLACE_PREPOSITIONS, place[0].lower()):
        place = place[1:]
    if not place or len(place) > 6:
        return None
    return f"{match['verb']} {match['obj']} back to {_the(_join(place))}"


def _swapped(match: re.Match, input_caption: str, edited_caption: str) -> str | None:
    """"turn the red circle into a square" → "turn the red square back into a circle", if the captions show the
    object replaced; a bare noun is enriched from the input caption ("jacket" → "denim jacket")."""
    old_words, new_words = _bare(match["a"]), _bare(match["b"])
    if not old_words or not new_words or {old_words[-1].lower(), new_words[-1].lower()} & _PRONOUNS:
        return None
    old_in, old_out = (len(_occurrences(_tokens(c), old_words)) for c in (input_caption, edited_caption))
    new_in, new_out = (len(_occurrences(_tokens(c), new_words[-1:])) for c in (input_caption, edited_caption))
    if match["verb"].lower() not in ("replace", "swap", "exchange") and not (old_in > old_out and new_out > new_in):
        return None
    modifiers = old_words[:-1]  # "red" of "the red circle", if the edited caption shows a "red square"
    carried = next((modifiers[i:] for i in range(len(modifiers))
                    if _occurrences(_tokens(edited_caption), modifiers[i:] + new_words)), [])
    new_name = carried + new_words
    old_name = [w for w in old_words if w not in carried]
    if len(old_words) == 1:
        named = _named_once(input_caption, old_words)
        old_name = (_before(*named, limit=2) if named else []) + old_words
    verb = match["verb"]
    if verb.lower() in ("replace", "swap", "exchange"):
        return f"{verb} the {_join(new_name)} {match['prep']} {_indefinite(old_name)}"
    if not match.groupdict().get("prep"):  # "make the jacket a rain coat"
        return f"{verb} the {_join(new_name)} {_indefinite(old_name)}"
    return f"{verb} the {_join(new_name)} back {match['prep']} {_indefinite(old_name)}"


def _same(match: re.Match, input_caption: str, edited_caption: str) -> str:
    return match.string


def _opposite(match: re.Match, input_caption: str, edited_caption: str) -> str:
    """The instruction with its direction word (or tilt/straighten) swapped for the opposite."""
    word = match["dir"]
    return match.string[: match.start("dir")] + OPPOSITE_DIRECTIONS[word.lower()] + match.string[match.end("dir"):]


_ATTRIBUTE_WORD = "|".join(sorted(COLOURS | SIZES, key=len, reverse=True))
_RULES = [(re.compile(pattern, re.IGNORECASE), handler) for pattern, handler in [
    (r"(?P<dir>tilt|straighten) the .+", _opposite),
    (r"(?:turn|flip|rotate) the .+ upside[- ]down|(?:flip|mirror) the .+?(?: horizontally| vertically)?", _same),
    (r"(?:rotate|turn) the .+? (?P<dir>clockwise|counterclockwise|anticlockwise)(?: by \d+ degrees)?", _opposite),
    (r"(?:move|shift|slide|push|drag) the .+? (?:to the )?(?P<dir>left|right|up|down|upwards?|downwards?|higher|"
     r"lower|closer|farther|forwards?|backwards?)", _opposite),
    (rf"(?P<verb>make|paint|colou?r|recolou?r|dye|turn|change|resize|set|switch) (?P<pre>the colou?r of )?"
     rf"(?P<obj>.+?)(?P<mid>(?:'s| 's)? colou?r to | to | into | )(?P<w>{_ATTRIBUTE_WORD})"
     rf"(?P<tail> colou?red| colou?r)?", _attribute),
    (r"(?P<verb>add|put|place|draw|insert|include) (?P<obj>.+?)(?: (?:" + _PLACE_PREPOSITIONS + r") .+)?", _added),
    (r"(?:remove|delete|erase|take away|take out|get rid of|eliminate) (?P<obj>.+?)(?: from .+)?", _removed),
    (r"(?P<verb>move|relocate) (?P<obj>the .+?) (?:" + _PLACE_PREPOSITIONS + r") (?P<dest>.+)", _moved_to),
    (r"(?P<verb>replace|swap|exchange) (?P<a>.+?) (?P<prep>with|for) (?P<b>.+)", _swapped),
    (r"(?P<verb>turn|change|transform|convert) (?P<a>.+?) (?P<prep>into|to) (?P<b>.+)", _swapped),
    (r"(?P<verb>make) (?P<a>the .+?) (?P<b>(?:a|an) .+)", _swapped),
]]
_POLITE = re.compile(r"^(please,? )?(.*?)((?:,| and) nothing else)?$", re.IGNORECASE)


def reverse_instruction_by_rules(input_caption: str, edit_instruction: str, edited_caption: str) -> str | None:
    """A reverse instruction for the common edit forms, or None when no rule applies or the captions do not
    give what the reverse needs (e.g. the colour before a colour change): it never guesses.

    Forms: add/remove, replace/swap, turn/change/make A into B, colour and size changes, moves (directions,
    or places read off the captions), tilts, flips and rotations; a leading "please" and a trailing
    ", nothing else" are kept."""
    for name, value in (("input_caption", input_caption), ("edit_instruction", edit_instruction),
                        ("edited_caption", edited_caption)):
        if not isinstance(value, str):
            raise TypeError(f"`{name}` must be a str, got {type(value).__name__}.")
    text = " ".join(edit_instruction.translate(SMART_QUOTES).split()).rstrip(".!")
    polite, core, suffix = _POLITE.match(text).groups()
    for pattern, handler in _RULES:
        match = pattern.fullmatch(core)
        if match:
            reverse = handler(match, input_caption, edited_caption)
            return None if reverse is None else f"{polite or ''}{reverse}{suffix or ''}"
    return None
