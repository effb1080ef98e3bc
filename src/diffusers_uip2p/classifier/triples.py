"""Labelled (source prompt, target prompt, edit task) triples for training the edit-task classifier.

The DSI paper (§4.3, supplement A) asked GPT-4 for 10,000 such triples. No LLM is reachable offline, so
this module writes them from templates over an everyday vocabulary. The "train" and "test" splits share
neither templates nor content words, so test accuracy measures how well the classifier generalises to
unseen phrasings and nouns rather than how well it memorised them. `llm_triples` holds the paper's LLM path.

Regenerate the committed files with ``python -m diffusers_uip2p.classifier.triples --output-dir DIR``.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from .tasks import EDIT_TASKS, check_task

SPLITS = ("train", "test")
DATA_DIR = Path(__file__).parent / "data"

# Words that both splits may use: they carry grammar, not content.
FUNCTION_WORDS = frozenset("a an the of in on at with and to under near during after up down beside".split())

# Slots a color may precede ("a black cat"); people get none.
COLORED_SLOTS = ("animal", "object", "vehicle")

# Each split's vocabulary, keyed by the template slot it fills. Places, surfaces, roads and times are
# whole prepositional phrases; poses suit any creature, person actions only people.
TRAIN_WORDS = {
    "color": ("black", "white", "brown", "red", "blue", "green", "gray", "yellow"),
    "person": ("man", "woman", "boy", "girl", "chef", "farmer", "nurse", "soldier", "firefighter", "student"),
    "animal": ("cat", "dog", "tiger", "horse", "rabbit", "bear", "fox", "cow", "lion", "sheep", "duck", "wolf"),
    "object": ("lamp", "vase", "laptop", "backpack", "umbrella", "teapot", "clock", "guitar", "candle", "mug"),
    "vehicle": ("car", "bus", "bicycle", "motorcycle", "truck", "tractor", "van", "scooter"),
    "food": ("burger", "pizza", "apple", "sandwich", "cake", "banana", "donut", "bowl of soup", "croissant"),
    "person_action": ("reading a book", "playing the guitar", "cooking pasta", "talking on the phone",
                      "drinking coffee", "writing a letter", "taking a photo", "painting a fence", "waving",
                      "clapping", "dancing", "laughing"),
    "pose": ("sitting", "standing", "running", "sleeping", "jumping", "walking", "lying down", "looking up",
             "stretching", "resting"),
    "place": ("in a kitchen", "in a park", "on a beach", "in a forest", "in a library", "in a garden",
              "in a classroom", "in a desert", "on a snowy mountain", "in a living room", "at a train station"),
    "surface": ("on a wooden table", "on a blue sofa", "on a windowsill", "on a kitchen counter",
                "on a stone wall", "on a bed", "on a rug", "on a bench"),
    "road": ("in a parking lot", "on a highway", "on a dirt road", "on a bridge", "in a garage",
             "near a gas station", "on a busy street"),
    "time": ("at sunset", "at night", "in the rain", "at noon", "on a foggy morning", "during a thunderstorm",
             "under a clear blue sky", "in heavy snow"),
    "style": ("photo", "watercolor painting", "oil painting", "pencil sketch", "cartoon", "3d render",
              "pixel art image"),
}
TEST_WORDS = {
    "color": ("orange", "purple", "pink", "golden", "silver", "beige", "turquoise", "crimson"),
    "person": ("teacher", "doctor", "grandmother", "toddler", "astronaut", "pilot", "baker", "mechanic",
               "musician"),
    "animal": ("elephant", "giraffe", "penguin", "owl", "squirrel", "goat", "parrot", "deer", "monkey", "zebra",
               "kangaroo", "hamster"),
    "object": ("kettle", "camera", "suitcase", "helmet", "globe", "armchair", "basket", "typewriter", "bottle",
               "pillow"),
    "vehicle": ("tram", "jeep", "taxi", "ambulance", "limousine", "camper", "rickshaw"),
    "food": ("pancake", "watermelon", "taco", "cupcake", "pear", "bagel", "sushi roll", "pie", "lemon", "muffin"),
    "person_action": ("doing a jigsaw puzzle", "knitting a scarf", "juggling", "typing on a keyboard", "eating noodles",
                      "watering flowers", "singing", "sweeping the floor", "carrying groceries", "flying a kite",
                      "doing yoga", "climbing a ladder"),
    "pose": ("crouching", "leaning forward", "kneeling", "dozing", "hopping", "yawning", "spinning", "crawling"),
    "place": ("in a bedroom", "in a museum", "on a rooftop", "in a meadow", "in a jungle", "in a bakery",
              "in an office", "on a pier", "in a greenhouse", "in a cave", "in a stadium", "at a campsite"),
    "surface": ("on a glass shelf", "on a picnic blanket", "on a marble floor", "on a wicker chair",
                "on a metal tray", "on a cushion", "on a bookshelf", "on a porch step"),
    "road": ("on a cobblestone alley", "at a crossroads", "in a tunnel", "on a racetrack", "beside a canal",
             "in a village square"),
    "time": ("at dawn", "at dusk", "in a snowstorm", "under a full moon", "on a windy afternoon",
             "in a sandstorm", "after sunrise", "on a hazy evening", "in autumn"),
    "style": ("charcoal drawing", "ink illustration", "mosaic", "stained glass artwork", "comic strip panel",
              "claymation still", "embroidery", "impressionist canvas", "linocut print"),
}

# (source, target) templates per task. "{a_x}" is slot x with its article, "{new_x}" a different value
# drawn from the same slot, so every target differs from its source exactly where its task says.
TRAIN_TEMPLATES = {
    "object_replacement": (
        ("{a_animal} {pose} {surface}", "{a_new_animal} {pose} {surface}"),
        ("{a_object} {surface} {place}", "{a_new_object} {surface} {place}"),
        ("{a_vehicle} parked {road}", "{a_new_vehicle} parked {road}"),
        ("{a_person} eating {a_food} {place}", "{a_person} eating {a_new_food} {place}"),
    ),
    "action_editing": (
        ("{a_person} {person_action} {place}", "{a_person} {new_person_action} {place}"),
        ("{a_animal} {pose} {surface}", "{a_animal} {new_pose} {surface}"),
        ("{a_person} and {a_animal} {pose} {place}", "{a_person} and {a_animal} {new_pose} {place}"),
    ),
    "scene_editing": (
        ("{a_person} {person_action} {place}", "{a_person} {person_action} {new_place}"),
        ("{a_vehicle} {road} {time}", "{a_vehicle} {road} {new_time}"),
        ("{a_animal} {pose} {place} {time}", "{a_animal} {pose} {new_place} {time}"),
    ),
    "object_adding": (
        ("{a_person} {pose} {place}", "{a_person} and {a_animal} {pose} {place}"),
        ("{a_food} {surface}", "{a_food} and {a_new_food} {surface}"),
        ("{a_animal} {pose} {place}", "{a_animal} {pose} {place} next to {a_object}"),
    ),
    "style_editing": (
        ("{a_style} of {a_animal} {pose} {place}", "{a_new_style} of {a_animal} {pose} {place}"),
        ("{a_style} depicting {a_vehicle} {road}", "{a_new_style} depicting {a_vehicle} {road}"),
        ("{a_person} {person_action} {place}, {style}", "{a_person} {person_action} {place}, {new_style}"),
    ),
}
TEST_TEMPLATES = {
    "object_replacement": (
        ("{a_person} holding {a_object} {place}", "{a_person} holding {a_new_object} {place}"),
        ("{a_animal} {pose} beside {a_vehicle}", "{a_new_animal} {pose} beside {a_vehicle}"),
        ("{a_food} {surface} {time}", "{a_new_food} {surface} {time}"),
    ),
    "action_editing": (
        ("{time}, {a_person} {person_action} {place}", "{time}, {a_person} {new_person_action} {place}"),
        ("{a_animal} {pose} {place} {time}", "{a_animal} {new_pose} {place} {time}"),
        ("{a_person} {person_action} next to {a_vehicle}", "{a_person} {new_person_action} next to {a_vehicle}"),
    ),
    "scene_editing": (
        ("{a_animal} {pose} {place}", "{a_animal} {pose} {new_place}"),
        ("{a_person} {person_action} {time}", "{a_person} {person_action} {new_time}"),
        ("{a_vehicle} {road}", "{a_vehicle} {new_road}"),
    ),
    "object_adding": (
        ("{a_person} {pose} {place}", "{a_person} with {a_animal} {pose} {place}"),
        ("{a_object} {surface}", "{a_object} {surface} beside {a_food}"),
        ("{a_vehicle} {road}", "{a_vehicle} and {a_new_vehicle} {road}"),
    ),
    "style_editing": (
        ("{a_style} showing {a_person} {person_action}", "{a_new_style} showing {a_person} {person_action}"),
        ("{a_animal} {place}, {style}", "{a_animal} {place}, {new_style}"),
        ("{a_food} {surface}, rendered as {a_style}", "{a_food} {surface}, rendered as {a_new_style}"),
    ),
}

_WORDS = {"train": TRAIN_WORDS, "test": TEST_WORDS}
_TEMPLATES = {"train": TRAIN_TEMPLATES, "test": TEST_TEMPLATES}
_SLOT = re.compile(r"\{(a_)?(new_)?(\w+)\}")


@dataclass(frozen=True)
class EditTriple:
    """One classifier example: the caption of an image, the prompt it should be edited to, the task."""

    source: str
    target: str
    task: str

    def __post_init__(self):
        check_task(self.task)

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, record: dict) -> EditTriple:
        return cls(record["source"], record["target"], record["task"])


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {', '.join(SPLITS)}, got {split!r}.")
    return split


def content_words(split: str) -> frozenset[str]:
    """Every non-function word the split's vocabulary can put into a prompt."""
    phrases = [phrase for values in _WORDS[check_split(split)].values() for phrase in values]
    return frozenset(re.findall(r"[\w-]+", " ".join(phrases))) - FUNCTION_WORDS


def check_splits_disjoint() -> None:
    """Raise AssertionError if the splits share a content word or a template: test must stay unseen."""
    shared_words = content_words("train") & content_words("test")
    if shared_words:
        raise AssertionError(f"train and test share content words: {sorted(shared_words)}")
    train_templates = {pair for pairs in TRAIN_TEMPLATES.values() for pair in pairs}
    shared_templates = train_templates & {pair for pairs in TEST_TEMPLATES.values() for pair in pairs}
    if shared_templates:
        raise AssertionError(f"train and test share templates: {sorted(shared_templates)}")


def words_by_class() -> dict[str, list[str]]:
    """Both splits' words grouped by the slot they fill (``function`` for the shared grammar words): the
    word classes a pretrained text encoder would know, for `diffusers_uip2p.testing.word_class_text_encoder`."""
    classes = {"function": sorted(FUNCTION_WORDS)}
    for vocabulary in _WORDS.values():
        for name, phrases in vocabulary.items():
            words = (word for phrase in phrases for word in re.findall(r"[\w-]+", phrase.lower()))
            classes.setdefault(name, []).extend(word for word in words if word not in FUNCTION_WORDS)
    return classes


# The kind of thing each word class names, one rung above the class: what a pretrained text encoder also
# knows about words (`diffusers_uip2p.testing.word_class_text_encoder`). Persons and animals are living
# beings; objects, vehicles and foods are things; places, surfaces and roads are where something is; poses
# and person actions are activities. Times, styles and colors are kinds of their own.
CLASS_GROUPS = {
    "person": "being", "animal": "being",
    "object": "thing", "vehicle": "thing", "food": "thing",
    "place": "location", "surface": "location", "road": "location",
    "pose": "activity", "person_action": "activity",
}


def class_groups() -> dict[str, str]:
    """`words_by_class`'s classes that share a broader kind, mapped to it (for `word_class_text_encoder`)."""
    return dict(CLASS_GROUPS)


def with_article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _template_capacity(template: tuple[str, str], words: dict[str, tuple[str, ...]]) -> int:
    """How many distinct (source, target) pairs `_fill` can make from one template."""
    capacity = 1
    for _, new, slot in set(_SLOT.findall(" ".join(template))):
        choices = len(words[slot]) - bool(new)
        capacity *= choices * (1 + len(words["color"])) if slot in COLORED_SLOTS else choices
    return capacity


def max_triples(split: str) -> int:
    """The most triples `generate_triples` makes for a split: half of what its smallest task can supply,
    so that drawing at random and rejecting duplicates stays fast."""
    words, templates = _WORDS[check_split(split)], _TEMPLATES[split]
    smallest = min(sum(_template_capacity(t, words) for t in templates[task]) for task in EDIT_TASKS)
    return smallest // 2 * len(EDIT_TASKS)


def _fill(template: tuple[str, str], words: dict[str, tuple[str, ...]], rng: random.Random) -> tuple[str, str]:
    """Fill a (source, target) template; a slot keeps its value in both, a "new_" slot gets a different one."""
    chosen: dict[str, str] = {}
    phrases: dict[str, str] = {}

    def fill_slot(match: re.Match) -> str:
        article, new, slot = match.groups()
        key = f"{new or ''}{slot}"
        if key not in phrases:
            options = [word for word in words[slot] if word != chosen.get(slot)]
            chosen[key] = rng.choice(options)
            phrase = chosen[key]
            if slot in COLORED_SLOTS and rng.random() < 0.5:
                phrase = f"{rng.choice(words['color'])} {phrase}"
            phrases[key] = phrase
        return with_article(phrases[key]) if article else phrases[key]

    return _SLOT.sub(fill_slot, template[0]), _SLOT.sub(fill_slot, template[1])  # source first: it sets slots


def _finish(source: str, target: str, rng: random.Random) -> tuple[str, str]:
    """Vary the surface form as people write prompts: sentence case or not, a final period or not."""
    capitalize, period = rng.choice(((True, True), (True, False), (False, False)))
    texts = [text[0].upper() + text[1:] if capitalize else text for text in (source, target)]
    return tuple(text + "." if period else text for text in texts)


def generate_triples(split: str, num: int, seed: int = 0) -> list[EditTriple]:
    """`num` distinct triples of one split, balanced across the five tasks, in a seeded shuffled order."""
    words, templates = _WORDS[check_split(split)], _TEMPLATES[split]
    if not isinstance(num, int) or not 1 <= num <= max_triples(split):
        raise ValueError(f"`num` must be an integer from 1 to {max_triples(split)} for the {split!r} split, "
                         f"got {num!r}.")
    rng = random.Random(seed)
    seen: set[tuple[str, str]] = set()
    triples = []
    for index, task in enumerate(EDIT_TASKS):
        quota = num // len(EDIT_TASKS) + (index < num % len(EDIT_TASKS))
        made = 0
        while made < quota:
            source, target = _finish(*_fill(rng.choice(templates[task]), words, rng), rng)
            key = (source.lower().rstrip("."), target.lower().rstrip("."))
            if key not in seen:
                seen.add(key)
                triples.append(EditTriple(source, target, task))
                made += 1
    rng.shuffle(triples)
    return triples


def write_triples(path: str | Path, triples: list[EditTriple]) -> None:
    """JSON lines, one {"source", "target", "task"} object a line: readable, diffable, streamable."""
    lines = (json.dumps(triple.to_dict(), ensure_ascii=False) + "\n" for triple in triples)
    Path(path).write_text("".join(lines), encoding="utf-8")


def read_triples(path: str | Path) -> list[EditTriple]:
    """The triples of a JSON-lines file; a bad record raises ValueError naming its file and line."""
    triples = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                triples.append(EditTriple.from_dict(json.loads(line)))
            except (ValueError, KeyError, TypeError) as error:
                raise ValueError(f"{path}:{number}: {error}") from error
    return triples


def triples_path(split: str, directory: str | Path = DATA_DIR) -> Path:
    return Path(directory) / f"edit_triples_{check_split(split)}.jsonl"


def load_triples(split: str) -> list[EditTriple]:
    """The committed triples of a split (10,000 train, 1,000 test), as the CLI below wrote them."""
    return read_triples(triples_path(split))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the edit-task classifier's train and test triples.")
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--num-train", type=int, default=10_000)
    parser.add_argument("--num-test", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    check_splits_disjoint()
    args.output_dir.mkdir(parents=True, exist_ok=True)
    for split, num in zip(SPLITS, (args.num_train, args.num_test), strict=True):
        path = triples_path(split, args.output_dir)
        write_triples(path, generate_triples(split, num, args.seed))
        print(f"wrote {num} {split} triples to {path}")


if __name__ == "__main__":
    main()
