"""UIP2P training data: reading records from every source, bad input, reverse instructions, LLM prompts and
parsers, CLIP filtering and the prepare_data CLI."""

import io
import json
import tarfile

import datasets
import numpy as np
import PIL.Image
import pytest
import torch
import torch.nn.functional as F
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

from diffusers_uip2p.shapes.dataset import export_jsonl, split_edits, to_hf_dataset
from diffusers_uip2p.shapes.scenes import render
from diffusers_uip2p.testing import make_clip_tokenizer, tiny_causal_lm
from diffusers_uip2p.training import prepare_data
from diffusers_uip2p.training.shards import expand_braces
from diffusers_uip2p.training.data import (
    RECORD_FIELDS,
    collate_edit_records,

    open_edit_dataset,
    write_jsonl_records,
)
from diffusers_uip2p.training.clip_filter import clip_filter
from diffusers_uip2p.training.instructions import (
    MULTI_EDIT_CUE,
    REVERSE_PROMPT,
    build_multi_edit_prompt,
    build_reverse_prompt,
    generate_multi_edits,
    generate_reverse_instructions,
    parse_multi_edits,
    parse_reverse_instruction,
)
from diffusers_uip2p.training.reverse_rules import reverse_instruction_by_rules

TEXTS = {"input_caption": "a cat on a mat", "edit_instruction": "add a hat to the cat",
         "edited_caption": "a cat with a hat on a mat", "reverse_instruction": "remove the hat"}


def pixels(image: PIL.Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image.convert("RGB"), np.float32).transpose(2, 0, 1) / 127.5 - 1)


def noise_image(width: int, height: int, seed: int = 0) -> PIL.Image.Image:
    return PIL.Image.fromarray(np.random.RandomState(seed).randint(0, 256, (height, width, 3), np.uint8))


def inverted(image: PIL.Image.Image) -> PIL.Image.Image:
    """An "edited" image whose pixel values are minus the input's: crops and flips must match."""
    return PIL.Image.fromarray(255 - np.asarray(image))


def is_inverse(edited: torch.Tensor, image: torch.Tensor) -> bool:
    """Resizing rounds each image on its own, so up to a couple of grey levels apart."""
    return (edited + image).abs().max().item() < 0.05


@pytest.fixture(scope="module")
def shapes_edits():
    return split_edits("train", 4)


@pytest.fixture(scope="module")
def shapes_folder(shapes_edits, tmp_path_factory):
    folder = tmp_path_factory.mktemp("shapes")
    export_jsonl(shapes_edits, folder)
    return folder


# --- sources ---------------------------------------------------------------------------------------------------

def test_shapes_jsonl_export_reads_back_exactly(shapes_folder, shapes_edits):
    dataset = open_edit_dataset(shapes_folder, resolution=64)
    assert len(dataset) == 4 and len(open_edit_dataset(shapes_folder / "records.jsonl", resolution=64)) == 4
    for i, edit in enumerate(shapes_edits):
        item = dataset[i]
        assert item["index"] == i and item["pixel_values"].dtype == torch.float32
        assert torch.equal(item["pixel_values"], pixels(render(edit.source)))
        assert torch.equal(item["edited_pixel_values"], pixels(render(edit.target)))
        assert (item["input_caption"], item["edit_instruction"], item["edited_caption"], item["reverse_instruction"]) \
            == (edit.input_caption, edit.instruction, edit.edited_caption, edit.reverse_instruction)
    loader = torch.utils.data.DataLoader(open_edit_dataset(str(shapes_folder), resolution=32), batch_size=3,
                                         collate_fn=collate_edit_records)
    batch = next(iter(loader))
    assert batch["pixel_values"].shape == batch["edited_pixel_values"].shape == (3, 3, 32, 32)
    assert batch["pixel_values"].min() >= -1 and batch["pixel_values"].max() <= 1
    assert batch["index"].tolist() == [0, 1, 2] and len(batch["reverse_instruction"]) == 3


def test_write_jsonl_records_round_trip_with_centre_crop_and_optional_edited_images(tmp_path):
    wide = noise_image(40, 20)
    records = [{"image": wide, "edited_image": inverted(wide), **TEXTS, "source": "wide"},
               {"image": noise_image(12, 24, seed=1), **TEXTS}]
    path = write_jsonl_records(records, tmp_path / "out")
    assert json.loads(path.read_text().splitlines()[0])["image"] == "images/000000.png"
    dataset = open_edit_dataset(tmp_path / "out", resolution=10)
    first, second = dataset[0], dataset[1]
    expected = pixels(wide.resize((20, 10), PIL.Image.Resampling.BICUBIC).crop((5, 0, 15, 10)))
    assert torch.equal(first["pixel_values"], expected)
    assert is_inverse(first["edited_pixel_values"], first["pixel_values"])
    assert "edited_pixel_values" not in second and second["pixel_values"].shape == (3, 10, 10)
    batch = collate_edit_records([first, second])
    assert "edited_pixel_values" not in batch and batch["pixel_values"].shape == (2, 3, 10, 10)
    with pytest.raises(ValueError, match=r"needs edited images; record 1 \(records.jsonl:2\) has none"):
        open_edit_dataset(tmp_path / "out", resolution=10, require_edited=True)
    # image paths are copied (once when shared), and the folder reads the same
    copied = write_jsonl_records([{**TEXTS, "image": tmp_path / "out/images/000000.png"}] * 2, tmp_path / "copy")
    lines = [json.loads(line) for line in copied.read_text().splitlines()]
    assert lines[0]["image"] == lines[1]["image"] == "images/000000.png"
    assert torch.equal(open_edit_dataset(tmp_path / "copy", resolution=10)[1]["pixel_values"], expected)
    with pytest.raises(TypeError, match=r"records\[0\]\['image'\]"):
        write_jsonl_records([{**TEXTS, "image": 3}], tmp_path / "bad")


def test_saved_hf_dataset_and_dataset_dict_read_like_the_jsonl(shapes_folder, shapes_edits, tmp_path):
    hf = to_hf_dataset(shapes_edits)
    hf.save_to_disk(tmp_path / "flat")
    datasets.DatasetDict({"train": hf.select(range(2)), "validation": hf}).save_to_disk(tmp_path / "dict")
    reference = open_edit_dataset(shapes_folder, resolution=64)
    flat = open_edit_dataset(tmp_path / "flat", resolution=64, require_edited=True)
    assert len(flat) == 4 and all(torch.equal(flat[i]["edited_pixel_values"], reference[i]["edited_pixel_values"])
                                  for i in range(4))
    assert flat[3]["reverse_instruction"] == reference[3]["reverse_instruction"]
    assert len(open_edit_dataset(tmp_path / "dict", resolution=64)) == 2
    assert len(open_edit_dataset(tmp_path / "dict", resolution=64, split="validation", max_records=3)) == 3
    with pytest.raises(ValueError, match="`split` 'test'.*'train', 'validation'"):
        open_edit_dataset(tmp_path / "dict", resolution=64, split="test")


def test_dataset_object_with_diffusers_column_names():
    image = noise_image(16, 16)
    table = datasets.Dataset.from_dict({
        "input_image": [image, image], "edited_image": [inverted(image), None], "edit_prompt": ["add a hat"] * 2,
        "caption": ["a cat", "a dog"], "caption_after": ["a cat with a hat"] * 2, "undo": ["remove the hat", ""],
    }, features=datasets.Features({"input_image": datasets.Image(), "edited_image": datasets.Image(),
                                   **{c: datasets.Value("string") for c in
                                      ("edit_prompt", "caption", "caption_after", "undo")}}))
    columns = {"image": "input_image", "edit_instruction": "edit_prompt", "input_caption": "caption",
               "edited_caption": "caption_after", "reverse_instruction": "undo"}
    with pytest.warns(UserWarning, match=r"record 1: empty 'reverse_instruction'"):
        dataset = open_edit_dataset(table, resolution=8, columns=columns)
    assert len(dataset) == 1 and dataset[0]["edit_instruction"] == "add a hat" and dataset[0]["index"] == 0
    assert is_inverse(dataset[0]["edited_pixel_values"], dataset[0]["pixel_values"])
    with pytest.raises(ValueError, match=r"no column .*'edit_instruction' \(for 'edit_instruction'\).*columns="):
        open_edit_dataset(table, resolution=8, columns={"image": "input_image"})
    with pytest.raises(ValueError, match="needs edited images; record 1 has none"):
        open_edit_dataset(table, resolution=8, columns={**columns, "reverse_instruction": "edit_prompt"},
                          require_edited=True)
    with pytest.raises(ValueError, match="`columns` maps unknown fields"):
        open_edit_dataset(table, resolution=8, columns={"prompt": "edit_prompt"})
    features = datasets.Features({"image": datasets.Image(), **{f: datasets.Value("string") for f in TEXTS}})
    corrupt = datasets.Dataset.from_list([{"image": {"bytes": b"junk", "path": None}, **TEXTS}], features=features)
    with pytest.warns(UserWarning, match="record 0: unreadable image"):
        assert open_edit_dataset(corrupt, resolution=8)[0] is None


def write_shard(path, samples):
    with tarfile.open(path, "w") as tar:
        for key, files in samples:
            for extension, data in files.items():
                info = tarfile.TarInfo(f"{key}.{extension}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def png_bytes(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shards")
    for shard in range(2):
        samples = []
        for k in range(3):
            image = noise_image(12, 12, seed=10 * shard + k)
            texts = {**TEXTS, "input_caption": f"caption {shard}-{k}"}
            samples.append((f"{shard}{k:04d}", {"png": png_bytes(image), "json": json.dumps(texts).encode(),
                                                "edited.png": png_bytes(inverted(image))}))
        write_shard(folder / f"shard-{shard:03d}.tar", samples)
    return folder


def captions_of(dataset) -> list[str]:
    return [item["input_caption"] for item in dataset]


def test_tar_shards_split_across_ranks_disjoint_and_complete(shards):
    pattern = str(shards / "shard-{000..001}.tar")
    assert expand_braces(pattern) == [str(shards / "shard-000.tar"), str(shards / "shard-001.tar")]
    ranks = [captions_of(open_edit_dataset(pattern, resolution=8, rank=r, world_size=2)) for r in range(2)]
    assert ranks[0] == ["caption 0-0", "caption 0-1", "caption 0-2"] and not set(ranks[0]) & set(ranks[1])
    everything = captions_of(open_edit_dataset(sorted(shards.glob("*.tar")), resolution=8))
    assert sorted(everything) == sorted(ranks[0] + ranks[1]) and len(everything) == 6
    item = next(iter(open_edit_dataset(pattern, resolution=8, require_edited=True)))
    assert item["index"] == 0 and is_inverse(item["edited_pixel_values"], item["pixel_values"])
    loader = torch.utils.data.DataLoader(open_edit_dataset(pattern, resolution=8), batch_size=4,
                                         collate_fn=collate_edit_records)
    assert [len(b["input_caption"]) for b in loader] == [4, 2]
    assert len(captions_of(open_edit_dataset(pattern, resolution=8, max_records=2))) == 2
    with pytest.raises(ValueError, match="missing tar shards"):
        open_edit_dataset(str(shards / "shard-{000..002}.tar"), resolution=8)
    with pytest.raises(ValueError, match="gets no shard"):
        open_edit_dataset(pattern, resolution=8, rank=2, world_size=3)


def test_tar_shard_order_is_seeded_by_seed_and_epoch(shards):
    dataset = open_edit_dataset(str(shards / "shard-{000..001}.tar"), resolution=8, shuffle_buffer=4, seed=3)
    first = captions_of(dataset)
    assert captions_of(dataset) == first and sorted(first) == sorted(captions_of(open_edit_dataset(
        str(shards / "shard-{000..001}.tar"), resolution=8)))
    orders = set()
    for epoch in range(4):
        dataset.set_epoch(epoch)
        orders.add(tuple(captions_of(dataset)))
    assert len(orders) > 1


def test_tar_shard_bad_samples_are_reported(tmp_path):
    image = png_bytes(noise_image(8, 8))
    write_shard(tmp_path / "bad.tar", [("a", {"png": image, "json": json.dumps(TEXTS).encode()}),
                                       ("b", {"png": image, "json": json.dumps({**TEXTS, "edited_caption": ""})
                                              .encode()}),
                                       ("c", {"png": b"not an image", "json": json.dumps(TEXTS).encode()}),
                                       ("d", {"json": json.dumps(TEXTS).encode()})])
    with pytest.warns(UserWarning) as caught:
        items = list(open_edit_dataset(str(tmp_path / "bad.tar"), resolution=8))
    assert len(items) == 1
    messages = [str(w.message) for w in caught]
    assert any("sample 1 (bad.tar:b): empty 'edited_caption'" in m for m in messages)
    assert any("sample 2 (bad.tar:c): unreadable image" in m for m in messages)
    assert any("sample 3 (bad.tar:d): no image" in m for m in messages)
    with pytest.raises(ValueError, match=r"sample 1 \(bad.tar:b\)"):
        list(open_edit_dataset(str(tmp_path / "bad.tar"), resolution=8, on_bad_record="error"))
    with pytest.raises(ValueError, match=r"needs edited images; sample 0 \(bad.tar:a\) has none"):
        list(open_edit_dataset(str(tmp_path / "bad.tar"), resolution=8, require_edited=True))


def test_random_flip_and_crop_move_the_edited_image_with_the_input(tmp_path):
    image = noise_image(24, 16, seed=5)
    write_jsonl_records([{"image": image, "edited_image": inverted(image), **TEXTS}] * 8, tmp_path)
    dataset = open_edit_dataset(tmp_path, resolution=8, random_flip=True, center_crop=False, seed=1)
    items = [dataset[i] for i in range(8)]
    again = open_edit_dataset(tmp_path, resolution=8, random_flip=True, center_crop=False, seed=1)
    assert all(torch.equal(item["pixel_values"], again[i]["pixel_values"]) for i, item in enumerate(items))
    assert all(is_inverse(item["edited_pixel_values"], item["pixel_values"]) for item in items)
    resized = image.resize((12, 8), PIL.Image.Resampling.BICUBIC)
    crops = [pixels(resized.crop((left, 0, left + 8, 8))) for left in range(5)]
    flips = [any(torch.equal(item["pixel_values"], crop.flip(-1)) for crop in crops) for item in items]
    plain = [any(torch.equal(item["pixel_values"], crop) for crop in crops) for item in items]
    assert all(f or p for f, p in zip(flips, plain, strict=True)) and any(flips) and any(plain)
    assert len({tuple(item["pixel_values"][0, 0].tolist()) for item in items}) > 2  # crops vary too


# --- bad input -------------------------------------------------------------------------------------------------

@pytest.fixture
def messy_folder(tmp_path):
    noise_image(8, 8).save(tmp_path / "good.png")
    (tmp_path / "text.png").write_text("this is not an image")
    lines = [{**TEXTS, "image": "good.png"},
             {k: v for k, v in TEXTS.items() if k != "edited_caption"} | {"image": "good.png"},
             {**TEXTS, "input_caption": "  ", "image": "good.png"},
             {**TEXTS, "image": "text.png"}]
    (tmp_path / "records.jsonl").write_text("\n".join(map(json.dumps, lines)) + "\n\n{not json\n")
    return tmp_path


def test_bad_records_are_skipped_with_a_warning_naming_index_and_line(messy_folder):
    with pytest.warns(UserWarning) as caught:
        dataset = open_edit_dataset(messy_folder, resolution=8)
    messages = [str(w.message) for w in caught]
    assert any("record 1 (records.jsonl:2): missing 'edited_caption'" in m for m in messages)
    assert any("record 2 (records.jsonl:3): empty 'input_caption'" in m for m in messages)
    assert any("record 4 (records.jsonl:6): not a JSON record" in m for m in messages)
    assert len(dataset) == 2  # the unreadable image is found only when read
    with pytest.warns(UserWarning, match=r"record 3 \(records.jsonl:4\): unreadable image 'text.png'"):
        assert dataset[1] is None
    batch = collate_edit_records([dataset[0], None])
    assert batch["pixel_values"].shape == (1, 3, 8, 8) and batch["index"].tolist() == [0]
    assert collate_edit_records([None]) == {}


def test_bad_records_raise_when_asked(messy_folder):
    with pytest.raises(ValueError, match=r"record 1 \(records.jsonl:2\): missing 'edited_caption'"):
        open_edit_dataset(messy_folder, resolution=8, on_bad_record="error")
    (messy_folder / "records.jsonl").write_text(json.dumps({**TEXTS, "image": "text.png"}) + "\n")
    dataset = open_edit_dataset(messy_folder, resolution=8, on_bad_record="error")
    with pytest.raises(ValueError, match=r"record 0 \(records.jsonl:1\): unreadable image 'text.png'"):
        dataset[0]


def test_bad_arguments_name_the_argument(messy_folder, tmp_path):
    with pytest.raises(ValueError, match="`on_bad_record` must be one of"):
        open_edit_dataset(messy_folder, resolution=8, on_bad_record="ignore")
    for resolution in (0, -8, 8.0, True):
        with pytest.raises(ValueError, match="`resolution` must be a positive integer"):
            open_edit_dataset(messy_folder, resolution=resolution)
    with pytest.raises(ValueError, match="`source` .*missing.* does not exist"):
        open_edit_dataset(tmp_path / "missing", resolution=8)
    with pytest.raises(ValueError, match="`rank`"):
        open_edit_dataset(messy_folder, resolution=8, rank=2, world_size=2)
    with pytest.raises(TypeError, match="`source`"):
        open_edit_dataset(42, resolution=8)
    (tmp_path / "empty.jsonl").write_text(json.dumps({"image": "x.png"}) + "\n")
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="No usable records"):
        open_edit_dataset(tmp_path / "empty.jsonl", resolution=8)
    assert RECORD_FIELDS[0] == "image"


# --- rule-based reverse instructions ---------------------------------------------------------------------------

@pytest.mark.parametrize("input_caption, instruction, edited_caption, expected", [
    # supplement Table 4 (colour changes need the old colour in the caption; the paper's LLM guessed it)
    ("A dog sitting on a couch", "add a ball next to the dog", "A dog sitting on a couch with a ball",
     "remove the ball"),
    ("A dog sitting on a couch", "remove the dog", "An empty couch", "add the dog back"),
    ("A dog sitting on a couch", "move the dog to the floor", "A dog sitting on the floor",
     "move the dog back to the couch"),
    ("A car parked on the street", "add a bicycle next to the car", "A car parked on the street with a bicycle",
     "remove the bicycle"),
    ("A car parked on the street", "remove the car", "An empty street", "add the car back"),
    ("A car parked on the street", "move the car to the garage", "A car parked in the garage",
     "move the car back to the street"),
    ("A black car parked on the street", "change the car color to red", "A red car parked on the street",
     "change the car color back to black"),
    ("A white dog sitting on a couch", "change the dog’s color to brown", "A brown dog sitting on a couch",
     "change the dog's color back to white"),
    # §8.1.1's in-context examples
    ("A man wearing a denim jacket", "make the jacket a rain coat", "A man wearing a rain coat",
     "make the rain coat a denim jacket"),
    ("A sofa in the living room", "add pillows", "A sofa in the living room with pillows", "remove the pillows"),
    # Figure 4
    ("a forest path in summer", "turn the forest path into a beach", "a beach in summer",
     "turn the beach back into a forest path"),
    ("a cat on a mat", "Replace the cat with a dog.", "a dog on a mat", "Replace the dog with a cat"),
    ("a white dog on grass", "make the dog brown", "a brown dog on grass", "make the dog white"),
    ("a small red circle", "make the red circle large", "a large red circle", "make the red circle small"),
    ("a red ball and a blue cup on a table", "remove the blue cup", "a red ball on a table", "add a blue cup"),
    ("a red circle on the left", "please move the red circle to the right, nothing else", "",
     "please move the red circle to the left, nothing else"),
    ("", "tilt the red square", "", "straighten the red square"),
    ("", "rotate the cup clockwise by 90 degrees", "", "rotate the cup counterclockwise by 90 degrees"),
    ("", "flip the car horizontally", "", "flip the car horizontally"),
])
def test_rules_reverse_common_edits(input_caption, instruction, edited_caption, expected):
    assert reverse_instruction_by_rules(input_caption, instruction, edited_caption) == expected


@pytest.mark.parametrize("input_caption, instruction, edited_caption", [
    ("A dog sitting on a couch", "change the dog’s color to brown", "A brown dog sitting on a couch"),
    ("A car parked on the street", "change the car color to red", "A red car parked on the street"),
    ("a white dog on grass", "make it a painting", "a painting of a white dog on grass"),
    ("a city under a blue sky", "change the sky to night", "a city under a night sky"),  # not a replaced object
    ("a photo of a man", "what if the man was a woman", "a photo of a woman"),
    ("a dog on a couch", "move the dog to the floor", "a dog on a couch"),  # the captions show no move
    ("a man", "make him older", "an old man"),
    ("a dog", "remove it", "nothing"),
    ("a dog on a couch", "put the dog on the floor", "a dog on the floor"),  # a move, not an addition
])
def test_rules_return_none_rather_than_guess(input_caption, instruction, edited_caption):
    assert reverse_instruction_by_rules(input_caption, instruction, edited_caption) is None


def test_rules_reverse_shapes_edits_without_a_wrong_answer():
    from diffusers_uip2p.shapes.language import apply_instruction

    edits = split_edits("validation", 200)
    exact = executable = wrong = 0
    for edit in edits:
        reverse = reverse_instruction_by_rules(edit.input_caption, edit.instruction, edit.edited_caption)
        exact += reverse == edit.reverse_instruction
        try:  # "back" marks an undo and changes nothing; Shapes' own grammar has no word for it
            result = apply_instruction(edit.target, (reverse or "").replace(" back", ""))
        except ValueError:  # no reverse, or phrased outside Shapes' grammar ("remove the small red circle")
            continue
        executable += result == edit.source
        wrong += result != edit.source
    assert exact >= 0.4 * len(edits) and executable >= 0.6 * len(edits) and wrong == 0
    with pytest.raises(TypeError, match="`edit_instruction`"):
        reverse_instruction_by_rules("a", None, "b")


# --- LLM prompts and parsers -----------------------------------------------------------------------------------

def test_prompts_hold_the_papers_text_and_the_fields():
    prompt = build_reverse_prompt("a cat", "add a hat", "a cat with a hat")
    assert prompt.startswith("Below is an instruction that describes a task") and prompt.endswith("### Response:\n")
    assert 'Edit Instruction: "add a hat"' in prompt and 'Reverse: "remove the pillows"' in prompt
    assert prompt == REVERSE_PROMPT.format(input_caption="a cat", edit_instruction="add a hat",
                                           edited_caption="a cat with a hat")
    multi = build_multi_edit_prompt("a cat")
    assert "generate 4 different edit instructions" in multi and 'Input Caption: "a cat"' in multi
    assert multi.endswith("### Response:\n" + MULTI_EDIT_CUE)
    with pytest.raises(ValueError, match="`edit_instruction`"):
        build_reverse_prompt("a cat", " ", "a cat")
    with pytest.raises(ValueError, match="`num_edits`"):
        build_multi_edit_prompt("a cat", 0)


@pytest.mark.parametrize("reply, expected", [
    ('remove the hat', "remove the hat"),
    ('"remove the hat"\n\n### Input: ...', "remove the hat"),
    ('Reverse: “remove the hat”', "remove the hat"),
    ('**Reverse Instruction:** remove the hat.', "remove the hat"),
    ('Sure! Here is the reverse instruction:\n\n1. remove the hat', "remove the hat"),
    ('The reverse instruction is:\n- `remove the hat`\nThis undoes the edit.', "remove the hat"),
    ('Reverse:\n  "remove the hat"', "remove the hat"),
    ('', None),
    ('###', None),
    ('- Input: "A dog"\n-> "add a ball"', None),
])
def test_parse_reverse_instruction(reply, expected):
    assert parse_reverse_instruction(reply) == expected


WELL_FORMED = """1. Edit Instruction: change the dog's color to brown
Edited Caption: A brown dog sitting on a couch
Reverse Instruction: change the dog's color back to white
2. Edit Instruction: add a ball next to the dog
Edited Caption: A dog sitting on a couch with a ball
Reverse Instruction: remove the ball"""

MALFORMED = """Sure! Here are 4 edits:

**1) Edit Instruction:** “remove the dog”
**Edited Caption:** "An empty couch"
**Reverse:** "add the dog back"

Edit 2:
- Edit Instruction: move the dog to the floor
- Edited Caption: A dog sitting on the floor
(the reverse is missing)

3. Instruction: [instruction]
Edited Caption: [result]
Reverse Instruction: [undo instruction]

4. Edit Instruction: add a hat Edited Caption: A dog with a hat on a couch Reverse: remove the hat
5. Edit Instruction: remove the dog
Edited Caption: duplicate
Reverse Instruction: duplicate
I hope these help!"""


def test_parse_multi_edits_well_formed_and_malformed():
    assert parse_multi_edits(WELL_FORMED) == [
        {"edit_instruction": "change the dog's color to brown", "edited_caption": "A brown dog sitting on a couch",
         "reverse_instruction": "change the dog's color back to white"},
        {"edit_instruction": "add a ball next to the dog", "edited_caption": "A dog sitting on a couch with a ball",
         "reverse_instruction": "remove the ball"}]
    assert parse_multi_edits(MALFORMED) == [
        {"edit_instruction": "remove the dog", "edited_caption": "An empty couch",
         "reverse_instruction": "add the dog back"},
        {"edit_instruction": "add a hat", "edited_caption": "A dog with a hat on a couch",
         "reverse_instruction": "remove the hat"}]
    lenient = parse_multi_edits(MALFORMED, require_reverse=False)
    assert lenient[1] == {"edit_instruction": "move the dog to the floor",
                          "edited_caption": "A dog sitting on the floor", "reverse_instruction": None}
    assert parse_multi_edits("no edits here") == [] and parse_multi_edits("") == []
    with pytest.raises(TypeError, match="`text`"):
        parse_multi_edits(None)


RECORDS = [
    {"image": "a.png", "input_caption": "a dog on a couch", "edit_instruction": "add a ball",
     "edited_caption": "a dog on a couch with a ball"},
    {"image": "b.png", "input_caption": "a cat", "edit_instruction": "make it a painting",
     "edited_caption": "a painting of a cat"},
    {"image": "c.png", "input_caption": "a car", "edit_instruction": "add a bird", "edited_caption": "a car and a bird",
     "reverse_instruction": "remove the bird"},
]


def test_reverse_generation_with_a_callable_falls_back_to_rules_or_drops():
    prompts = []

    def unhelpful_llm(prompt):
        prompts.append(prompt)
        return "I cannot help with that:" if "painting" in prompt else 'Reverse: "take the ball away"'

    records, counts = generate_reverse_instructions(RECORDS, unhelpful_llm, progress=False)
    assert [r["reverse_instruction"] for r in records] == ["take the ball away", "remove the bird"]
    assert dict(counts) == {"given": 1, "llm": 1, "rules": 0, "dropped": 1}
    assert prompts[0] == build_reverse_prompt(*(RECORDS[0][f] for f in ("input_caption", "edit_instruction",
                                                                         "edited_caption")))
    records, counts = generate_reverse_instructions(RECORDS, lambda prompt: "", progress=False)
    assert records[0]["reverse_instruction"] == "remove the ball" and counts["rules"] == 1
    records, counts = generate_reverse_instructions(RECORDS, lambda prompt: "", fallback_to_rules=False,
                                                    progress=False)
    assert len(records) == 1 and counts["dropped"] == 2
    records, counts = generate_reverse_instructions(RECORDS, None, overwrite=True, progress=False)
    assert [r["reverse_instruction"] for r in records] == ["remove the ball", "remove the bird"]
    assert records[0]["image"] == "a.png" and "reverse_instruction" not in RECORDS[0]
    with pytest.raises(ValueError, match=r"records\[0\] needs a non-empty 'edited_caption'"):
        generate_reverse_instructions([{"input_caption": "a", "edit_instruction": "b"}], None, progress=False)


def test_multi_edit_generation_with_a_callable():
    def llm(prompt):
        return "" if "empty" in prompt else MALFORMED.split("**1) Edit Instruction:**", 1)[1]

    records, counts = generate_multi_edits(["a dog on a couch", "an empty room"], llm, num_edits=4, progress=False)
    assert [r["edit_instruction"] for r in records] == ["remove the dog", "move the dog to the floor", "add a hat"]
    assert records[1]["reverse_instruction"] == "move the dog back to the couch"  # by rules
    assert all(r["caption_index"] == 0 and r["input_caption"] == "a dog on a couch" for r in records)
    assert dict(counts) == {"edits": 3, "rules": 1, "dropped": 0, "captions_without_edits": 1}
    records, counts = generate_multi_edits(["a dog on a couch"], llm, fallback_to_rules=False, progress=False)
    assert len(records) == 2 and counts["dropped"] == 1
    assert len(generate_multi_edits(["a dog on a couch"], llm, num_edits=1, progress=False)[0]) == 1


@pytest.fixture(scope="module")
def tiny_lm():
    return tiny_causal_lm()


def test_llm_path_with_a_tiny_causal_lm(tiny_lm, monkeypatch):
    model, tokenizer = tiny_lm
    records, counts = generate_reverse_instructions(RECORDS[:2], model, tokenizer, max_new_tokens=4, progress=False)
    assert sum(counts.values()) == 2 and all(r["reverse_instruction"] for r in records)
    edits, counts = generate_multi_edits(["a dog"], model, tokenizer, max_new_tokens=4, progress=False)
    assert isinstance(edits, list) and counts["edits"] + counts["captions_without_edits"] == 1
    reply = tokenizer('Reverse: "remove the ball"', add_special_tokens=False, return_tensors="pt")["input_ids"]
    monkeypatch.setattr(model, "generate", lambda input_ids, **kwargs: torch.cat([input_ids, reply], dim=1))
    records, counts = generate_reverse_instructions(RECORDS[:1], model, tokenizer, progress=False)
    assert records[0]["reverse_instruction"] == "remove the ball" and counts["llm"] == 1
    with pytest.raises(ValueError, match="tokenizer"):
        generate_reverse_instructions(RECORDS, model, progress=False)


# --- CLIP filtering --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_clip():
    tokenizer = make_clip_tokenizer()
    torch.manual_seed(0)
    config = CLIPConfig(  # text features are pooled at the tokenizer's end-of-text token
        text_config={"vocab_size": 1000, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 77, "eos_token_id": tokenizer.eos_token_id,
                     "bos_token_id": tokenizer.bos_token_id, "pad_token_id": tokenizer.pad_token_id},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        projection_dim=8)
    return CLIPModel(config).eval(), tokenizer


def test_clip_filter_equals_a_hand_computed_cosine_similarity(tiny_clip, tmp_path):
    model, tokenizer = tiny_clip
    images = [noise_image(40, 32, seed=s) for s in range(5)]
    images[2].save(tmp_path / "two.png")
    captions = ["a red circle", "a blue square on a white background", "noise", "a cat", "two dogs"]
    result = clip_filter([*images[:2], tmp_path / "two.png", *images[3:]], captions, model, tokenizer,
                         threshold=0.0, batch_size=2, progress=False)
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    with torch.no_grad():
        image = model.get_image_features(pixel_values=processor(images=images, return_tensors="pt")["pixel_values"])
        tokens = tokenizer(captions, padding=True, return_tensors="pt")
        text = model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
    image, text = (getattr(x, "pooler_output", x) for x in (image, text))
    expected = (image * text).sum(-1) / (image.norm(dim=-1) * text.norm(dim=-1))
    assert torch.allclose(result.similarities, expected, atol=1e-5)
    ranked = result.similarities.sort(descending=True).values  # halfway between the 3rd and 4th: no tie at rounding
    threshold = ((ranked[2] + ranked[3]) / 2).item()
    kept = clip_filter(images, captions, model, CLIPProcessor(image_processor=processor, tokenizer=tokenizer),
                       threshold=threshold, batch_size=5, progress=False)
    assert torch.allclose(kept.similarities, expected, atol=1e-5)
    assert kept.keep.tolist() == (expected >= threshold).tolist() and kept.keep.sum() == 3
    assert torch.allclose(F.cosine_similarity(image, text), expected, atol=1e-5)
    with pytest.raises(ValueError, match="pair up"):
        clip_filter(images, captions[:2], model, tokenizer)
    with pytest.raises(ValueError, match=r"captions\[1\]"):
        clip_filter(images[:2], ["a", ""], model, tokenizer)
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ValueError, match=r"images\[0\]: unreadable image"):
        clip_filter([tmp_path / "text.png"], ["a"], model, tokenizer, progress=False)


# --- the prepare_data CLI --------------------------------------------------------------------------------------

def test_prepare_data_cli_end_to_end(tiny_clip, tmp_path, monkeypatch, capsys):
    model, tokenizer = tiny_clip
    model.save_pretrained(tmp_path / "clip")
    tokenizer.save_pretrained(tmp_path / "clip")
    folder = tmp_path / "pairs"
    folder.mkdir()
    for i in range(4):
        noise_image(36, 32, seed=i).save(folder / f"{i}.png")
    (folder / "broken.png").write_text("not an image")
    lines = [{"image": "0.png", "caption": "a dog on a couch"}, {"file_name": "1.png", "caption": "a cat"},
             {"image": "2.png", "input_caption": "a dog on a couch", "edit_instruction": "add a ball",
              "edited_caption": "a dog on a couch with a ball"},
             {"image": "3.png", "input_caption": "a cat", "edit_instruction": "make it a painting",
              "edited_caption": "a painting of a cat"},
             {"image": "broken.png", "caption": "x"}, {"image": "0.png"}]
    (folder / "metadata.jsonl").write_text("\n".join(map(json.dumps, lines)) + "\nnot json\n")

    counts = prepare_data.main(["--input_path", str(folder), "--output_dir", str(tmp_path / "rules"),
                                "--clip_model", str(tmp_path / "clip"), "--clip_threshold", "-1"])
    assert counts["read"] == 4 and counts["written"] == 1 and counts["reverse instructions: rules"] == 1
    assert counts["dropped: unreadable image"] == counts["dropped: not a JSON object"] == 1
    assert counts["dropped: no image or caption"] == 1 and counts["dropped: no reverse instruction (LLM and rules " \
                                                                      "failed)"] == 1
    assert counts["dropped: pair without an edit (use --llm with --multi_edit)"] == 2
    assert "written: 1" in capsys.readouterr().out
    item = open_edit_dataset(tmp_path / "rules", resolution=16)[0]
    assert item["reverse_instruction"] == "remove the ball" and item["pixel_values"].shape == (3, 16, 16)
    line = json.loads((tmp_path / "rules/records.jsonl").read_text())
    assert -1 <= line["clip_similarity"] <= 1

    def fake_llm(name, device):
        return (lambda prompt: WELL_FORMED.split(MULTI_EDIT_CUE, 1)[1] if "4 different" in prompt else "",
                None)

    monkeypatch.setattr(prepare_data, "load_llm", fake_llm)
    counts = prepare_data.main(["--input_path", str(folder / "metadata.jsonl"), "--output_dir",
                                str(tmp_path / "llm"), "--llm", "fake", "--multi_edit"])
    assert counts["edits generated"] == 4 and counts["written"] == 5
    assert counts["reverse instructions: given"] == 4 and counts["reverse instructions: rules"] == 1
    dataset = open_edit_dataset(tmp_path / "llm", resolution=16)
    assert len(dataset) == 5 and dataset[1]["reverse_instruction"] == "change the dog's color back to white"
    images = {json.loads(line)["image"] for line in (tmp_path / "llm/records.jsonl").read_text().splitlines()}
    assert len(images) == 3  # each input image copied once
    with pytest.raises(SystemExit):
        prepare_data.main(["--input_path", str(folder), "--output_dir", str(tmp_path / "x"), "--multi_edit"])
    with pytest.raises(ValueError, match="--input_path"):
        prepare_data.main(["--input_path", str(tmp_path), "--output_dir", str(tmp_path / "x")])
