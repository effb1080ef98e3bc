"""The classifier's triples: the offline generator, the committed files, and the paper's LLM path."""

import collections
import re

import pytest
import torch
from transformers import pipeline

from diffusers_uip2p.classifier.llm_triples import (
    PAPER_EXAMPLES,
    PAPER_PROMPT,
    build_prompt,
    generate_triples_with_llm,
    parse_triples,
)
from diffusers_uip2p.classifier.tasks import EDIT_TASKS
from diffusers_uip2p.classifier.triples import (
    FUNCTION_WORDS,
    TEST_TEMPLATES,
    TRAIN_TEMPLATES,
    EditTriple,
    check_splits_disjoint,
    content_words,
    generate_triples,
    load_triples,
    main,
    max_triples,
    read_triples,
    triples_path,
)
from diffusers_uip2p.testing import tiny_causal_lm


@pytest.fixture(scope="module")
def train_triples():
    return generate_triples("train", 10_000)


def test_generation_is_deterministic_and_seeded():
    assert generate_triples("test", 200, seed=3) == generate_triples("test", 200, seed=3)
    assert generate_triples("test", 200, seed=3) != generate_triples("test", 200, seed=4)


def test_train_split_is_large_distinct_balanced_and_edits_something(train_triples):
    assert len(train_triples) == 10_000
    pairs = {(t.source.lower().rstrip("."), t.target.lower().rstrip(".")) for t in train_triples}
    assert len(pairs) == 10_000
    assert all(t.source != t.target for t in train_triples)
    assert collections.Counter(t.task for t in train_triples) == {task: 2000 for task in EDIT_TASKS}
    counts = collections.Counter(t.task for t in generate_triples("test", 1003))
    assert max(counts.values()) - min(counts.values()) <= 1


def test_articles_and_surface_forms_vary(train_triples):
    texts = [text for t in train_triples for text in (t.source, t.target)]
    assert not any(re.search(r"\ba [aeiou]", text, re.IGNORECASE) for text in texts)
    assert not any(re.search(r"\ban [^aeiou]", text, re.IGNORECASE) for text in texts)
    assert any(text.endswith(".") for text in texts) and any(not text.endswith(".") for text in texts)
    assert any(text[0].isupper() for text in texts) and any(text[0].islower() for text in texts)


def test_splits_share_no_templates_or_content_words():
    check_splits_disjoint()
    train_templates = {pair for pairs in TRAIN_TEMPLATES.values() for pair in pairs}
    assert train_templates.isdisjoint(pair for pairs in TEST_TEMPLATES.values() for pair in pairs)
    train_words = content_words("train")
    assert len(train_words) > 120 and len(content_words("test")) > 120
    # Not just the vocabularies: no generated test prompt contains a train content word.
    test_words = {word for t in generate_triples("test", 1000)
                  for word in re.findall(r"[\w-]+", f"{t.source} {t.target}".lower())}
    assert not (test_words - FUNCTION_WORDS) & train_words


@pytest.mark.parametrize(("kwargs", "argument"), [({"split": "val", "num": 5}, "split"),
                                                  ({"split": "train", "num": 0}, "num")])
def test_bad_arguments_name_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}`"):
        generate_triples(**kwargs)


def test_more_triples_than_the_vocabulary_allows_is_an_error():
    assert max_triples("train") >= 10_000 and max_triples("test") >= 1_000
    with pytest.raises(ValueError, match="`num`"):
        generate_triples("test", max_triples("test") + 1)


def test_triple_round_trips_and_checks_its_task():
    triple = EditTriple("a cat", "a dog", "object_replacement")
    assert EditTriple.from_dict(triple.to_dict()) == triple
    with pytest.raises(ValueError, match="task"):
        EditTriple("a cat", "a dog", "recolouring")


def test_committed_files_are_the_generators_output(tmp_path, train_triples):
    main(["--output-dir", str(tmp_path), "--num-train", "10000", "--num-test", "1000", "--seed", "0"])
    for split in ("train", "test"):
        assert triples_path(split, tmp_path).read_bytes() == triples_path(split).read_bytes()
        assert read_triples(triples_path(split, tmp_path)) == load_triples(split)
    assert load_triples("train") == train_triples
    assert len(load_triples("test")) == 1000


WELL_FORMED = """Here are the 4 samples:

1. Source: A black cat sitting on a blue sofa. Target: A yellow tiger sitting on a blue sofa. Task: Object Replacement
2. **Source:** “A man standing in a park.”
   **Target:** “A man running in the park.”
   **Task:** _Action Editing_
- source: a woman baking bread in a kitchen
  - TARGET: a woman baking bread in the forest
- Task: scene_editing.
* Source Text: A child on a grass field. Target Text: A child and his dog on a grass field. Task Label: New Object Creation
{"source": "A photo of a forest", "target": "An oil painting of a forest", "task": "StyleEditing"}
"""


def test_parser_reads_mixed_formatting():
    assert parse_triples(WELL_FORMED) == [
        EditTriple("A black cat sitting on a blue sofa", "A yellow tiger sitting on a blue sofa", "object_replacement"),
        EditTriple("A man standing in a park", "A man running in the park", "action_editing"),
        EditTriple("a woman baking bread in a kitchen", "a woman baking bread in the forest", "scene_editing"),
        EditTriple("A child on a grass field", "A child and his dog on a grass field", "object_adding"),
        EditTriple("A photo of a forest", "An oil painting of a forest", "style_editing"),
    ]


def test_parser_drops_incomplete_unknown_and_duplicate_records():
    text = """Source: A dog on a rug. Task: Action Editing
Source: A dog on a rug. Target: A fox on a rug. Task: Colour Editing
Target: A dog. Source: A cat. Task: Object Replacement
Source: A bus on a road. Target: A bus on a road. Task: Scene Editing
Source: Target: A car. Task: Object Replacement
Source: A boat at noon. Target: A boat at night. Task: Scene Editing.
source: a boat at noon target: A BOAT AT NIGHT task: scene editing
Source: A vase. Target: A vase and a lamp."""
    assert parse_triples(text) == [EditTriple("A boat at noon", "A boat at night", "scene_editing")]


@pytest.mark.parametrize("garbage", ["", "no records here", "Source:", "Task: Style Editing Target: x",
                                     ":::***___", "Source: Source: Target: Target: Task: Task:", "\x00\uffff" * 50])
def test_parser_returns_nothing_for_garbage(garbage):
    assert parse_triples(garbage) == []


def test_paper_prompt_quotes_fig_s10_and_its_examples_parse():
    assert PAPER_PROMPT.startswith("I want to make 10000 triple samples.")
    assert "You are an expert in English writing." in PAPER_PROMPT
    assert parse_triples(PAPER_PROMPT) == [EditTriple(e.source.rstrip("."), e.target.rstrip("."), e.task)
                                           for e in PAPER_EXAMPLES]
    assert build_prompt(10000) == PAPER_PROMPT + "\n\nHere are the 10000 samples:\n"
    own = [EditTriple("a cat", "a dog", "object_replacement")]
    assert parse_triples(build_prompt(3, own)) == own and "3 triple samples" in build_prompt(3, own)
    with pytest.raises(ValueError, match="num_samples"):
        build_prompt(0)


CANNED_REPLY = """- Source: A horse in a field. Target: A horse in a field at night. Task: Scene Editing
- Source: A horse in a field. Target: A horse and a dog in a field. Task: Object Adding
- Source: garbage without the rest"""


def test_llm_path_with_a_generation_function_returns_the_parsed_triples():
    prompts = []

    def fake_llm(prompt):
        prompts.append(prompt)
        return CANNED_REPLY

    triples = generate_triples_with_llm(fake_llm, num_samples=5, max_generations=3, progress=False)
    assert [t.task for t in triples] == ["scene_editing", "object_adding"]  # repeats are dropped
    assert len(prompts) == 3 and prompts[0] == build_prompt(5)
    assert len(generate_triples_with_llm(fake_llm, num_samples=1, max_generations=3)) == 1
    assert len(prompts) == 4  # stops once enough triples parsed


@pytest.fixture(scope="module")
def tiny_lm():
    return tiny_causal_lm()


def test_llm_path_with_a_random_causal_lm_and_pipeline_runs_end_to_end(tiny_lm):
    model, tokenizer = tiny_lm
    triples = generate_triples_with_llm(model, tokenizer, num_samples=3, max_new_tokens=8, max_generations=2)
    assert isinstance(triples, list) and all(isinstance(t, EditTriple) for t in triples)
    paper_sources = {e.source.rstrip(".").lower() for e in PAPER_EXAMPLES}
    assert not {t.source.lower() for t in triples} & paper_sources  # only the continuation is parsed, not the prompt
    generator = pipeline("text-generation", model=model, tokenizer=tokenizer)
    triples = generate_triples_with_llm(generator, num_samples=3, max_new_tokens=8, max_generations=1)
    assert isinstance(triples, list) and all(isinstance(t, EditTriple) for t in triples)


def test_llm_path_decodes_only_what_the_lm_added(tiny_lm, monkeypatch):
    model, tokenizer = tiny_lm
    reply_ids = tokenizer(CANNED_REPLY, add_special_tokens=False, return_tensors="pt")["input_ids"]
    monkeypatch.setattr(model, "generate", lambda input_ids, **kwargs: torch.cat([input_ids, reply_ids], dim=1))
    triples = generate_triples_with_llm(model, tokenizer, num_samples=2, max_new_tokens=8)
    assert triples == [EditTriple("a horse in a field", "a horse in a field at night", "scene_editing"),
                       EditTriple("a horse in a field", "a horse and a dog in a field", "object_adding")]


def test_llm_path_rejects_bad_inputs(tiny_lm):
    model, tokenizer = tiny_lm
    with pytest.raises(ValueError, match="tokenizer"):
        generate_triples_with_llm(model, num_samples=3)
    with pytest.raises(ValueError, match="tokenizer"):
        generate_triples_with_llm(lambda prompt: "", tokenizer, num_samples=3)
    with pytest.raises(ValueError, match="positions"):
        generate_triples_with_llm(model, tokenizer, num_samples=3, max_new_tokens=4096)
    with pytest.raises(ValueError, match="max_generations"):
        generate_triples_with_llm(model, tokenizer, max_generations=0)
    with pytest.raises(TypeError, match="model_or_pipeline"):
        generate_triples_with_llm("gpt-4", num_samples=3)
    with pytest.raises(TypeError, match="model_or_pipeline"):
        generate_triples_with_llm(torch.nn.Linear(2, 2), num_samples=3)
