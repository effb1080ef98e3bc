"""The edit-task classifier, its rule-based fallback, BLIP captioning and ``edit_method="auto"``."""

import os

import numpy as np
import PIL.Image
import pytest
import torch
from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

from diffusers_uip2p import AutoEditPipeline, EditTaskClassifier
from diffusers_uip2p.classifier import DEFAULT_TASK_METHODS, EDIT_TASKS, classify_by_rules
from diffusers_uip2p.pipelines.editing import DEFAULT_TARGET_RULE
from diffusers_uip2p.testing import tiny_text_to_image_components

SOURCE = "a red circle on a white background"
TARGET = "a blue circle on a white background"


def tiny_classifier(input_dim=32, seed=0):
    torch.manual_seed(seed)
    return EditTaskClassifier(input_dim=input_dim, hidden_dim=16, num_heads=2, num_layers=1).eval()


@pytest.fixture(scope="module")
def components():
    return tiny_text_to_image_components()


@pytest.fixture(scope="module")
def image():
    return PIL.Image.fromarray(np.random.RandomState(0).randint(0, 256, (16, 16, 3), np.uint8))


def test_default_configuration_is_table_s7():
    model = EditTaskClassifier()
    c = model.config
    assert (c.input_dim, c.num_tokens, c.hidden_dim, c.num_heads, c.num_layers) == (768, 154, 512, 8, 6)
    assert model.head.in_features == 512 and model.head.out_features == 5 and model.tasks == EDIT_TASKS
    width, ffn = 512, 2048
    block = (3 * width * width + 3 * width) + (width * width + width) + (width * ffn + ffn) + (ffn * width + width) \
        + 2 * 2 * width
    plain = (768 * width + width) + 77 * width + 2 * width + 6 * block + 2 * width + (width * 5 + 5)
    assert sum(p.numel() for p in EditTaskClassifier(compare_tokens=False).parameters()) == plain  # 19.4 M
    assert c.compare_tokens == "changes"
    assert sum(p.numel() for p in model.parameters()) == plain + 2 * width  # + the change embedding of each side
    positional = EditTaskClassifier(compare_tokens=True)  # the first version, as the shipped Shapes classifier
    assert sum(p.numel() for p in positional.parameters()) == plain + 768 * width + width  # + the difference stream
    logits = model.eval()(torch.randn(2, 77, 768), torch.randn(2, 77, 768))
    assert logits.shape == (2, 5)
    with pytest.raises(ValueError, match="`compare_tokens` must be one of 'changes', True, False, got 'diff'"):
        EditTaskClassifier(compare_tokens="diff")


def test_change_scores_find_the_changed_words_wherever_they_sit():
    from diffusers_uip2p.classifier.modeling import change_scores

    words = torch.eye(6, 16)  # six words, each unlike the others
    source = words[[0, 1, 2, 3]].unsqueeze(0)  # "a cat on sofa"
    target = words[[0, 4, 5, 1, 2, 3]].unsqueeze(0)  # "a black dog cat on sofa": two words inserted
    source_mask, target_mask = torch.ones(1, 4), torch.ones(1, 6)
    assert torch.allclose(change_scores(source, target, target_mask), torch.zeros(1, 4), atol=1e-6)
    target_scores = change_scores(target, source, source_mask)[0]
    assert target_scores[[0, 3, 4, 5]].abs().max() < 1e-6 and torch.allclose(target_scores[[1, 2]], torch.ones(2))
    padded_source = torch.cat([source, words[[4]].unsqueeze(0)], dim=1)  # a padding token that matches "black"
    assert torch.equal(change_scores(target, padded_source, torch.tensor([[1, 1, 1, 1, 0]]))[0], target_scores)


@pytest.mark.parametrize("compare_tokens", ["changes", True, False])
def test_padding_changes_nothing(compare_tokens):
    """Padding is masked (and cut off before the blocks): how much of it there is cannot matter, nor what it
    holds, except to the first version's difference stream (``True``), which subtracts the source's state at
    each position from the target's, padding or not."""
    torch.manual_seed(0)
    model = EditTaskClassifier(input_dim=8, num_tokens=20, hidden_dim=16, num_heads=2, num_layers=1,
                               compare_tokens=compare_tokens).eval()
    source, target = torch.randn(2, 10, 8), torch.randn(2, 10, 8)
    source_mask, target_mask = torch.zeros(2, 10), torch.zeros(2, 10)
    source_mask[0, :3], source_mask[1, :5], target_mask[0, :4], target_mask[1, :2] = 1, 1, 1, 1
    logits = model(source, target, source_mask, target_mask)
    if compare_tokens is not True:
        noisy_source = source + 5 * (1 - source_mask[..., None])
        noisy_target = target - 3 * (1 - target_mask[..., None])
        assert torch.allclose(model(noisy_source, noisy_target, source_mask, target_mask), logits, atol=1e-5)
    alone = model(source[:1], target[:1], source_mask[:1], target_mask[:1])  # shorter padding after the cut
    assert torch.allclose(alone, logits[:1], atol=1e-5)


def test_save_load_round_trip(tmp_path, components):
    model = tiny_classifier()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    loaded = EditTaskClassifier.from_pretrained(tmp_path).eval()
    args = (torch.randn(3, 77, 32), torch.randn(3, 77, 32))
    assert torch.allclose(model(*args), loaded(*args), atol=1e-6)
    prediction = loaded.predict([SOURCE, SOURCE], [TARGET, SOURCE], components["text_encoder"],
                                components["tokenizer"])
    assert len(prediction.labels) == 2 and set(prediction.labels) <= set(EDIT_TASKS)
    assert torch.allclose(prediction.probabilities.sum(-1), torch.ones(2))
    assert set(prediction.as_dicts()[0]) == set(EDIT_TASKS)


def test_bad_input(components):
    model = tiny_classifier()
    with pytest.raises(ValueError, match="1 source prompts and 2 target prompts"):
        model.predict(SOURCE, [TARGET, TARGET], components["text_encoder"], components["tokenizer"])
    with pytest.raises(ValueError, match="hidden size is 32 but this classifier was built for input_dim=768"):
        EditTaskClassifier(hidden_dim=16, num_heads=2, num_layers=1).predict(
            SOURCE, TARGET, components["text_encoder"], components["tokenizer"])
    with pytest.raises(ValueError, match=r"`source_embeds` must have shape \[batch, 77, 32\]"):
        model(torch.randn(1, 10, 32), torch.randn(1, 77, 32))
    with pytest.raises(TypeError, match="`target_prompts` must be a non-empty str or list of str"):
        model.predict(SOURCE, [], components["text_encoder"], components["tokenizer"])


RULE_CASES = [  # the DSI paper's examples (Fig. S10, S11) and the Shapes world's phrasing
    ("A black cat sitting on a blue sofa.", "A yellow tiger sitting on a blue sofa.", "object_replacement"),
    ("A laptop open on a desk next to a coffee cup.", "A notebook open on a desk next to a coffee cup.",
     "object_replacement"),
    ("A man standing in a park holding a frisbee.", "A man running in the park.", "action_editing"),
    ("A bear standing on the grass.", "A bear jumping on the grass.", "action_editing"),
    ("A woman baking bread in a bright kitchen.", "A woman baking bread in the forest.", "scene_editing"),
    ("A small boat on a calm lake at noon.", "A small boat on a calm lake under a starry night sky.",
     "scene_editing"),
    ("A burger on a plate.", "A burger and a tomato on the plate.", "object_adding"),
    ("A girl walking alone on the beach.", "A girl and a seagull walking on the beach.", "object_adding"),
    ("A watercolor painting depicting a countryside landscape.",
     "An oil painting style artwork of a countryside landscape.", "style_editing"),
    ("A photo of a forest in real life.", "An impressionist style painting of a forest.", "style_editing"),
    ("a small red circle at the top on a white background", "a small red square at the top on a white background",
     "object_replacement"),
    ("a small red circle at the top on a white background", "a small red circle at the bottom on a white background",
     "action_editing"),
    ("a small tilted red square at the top on a white background", "a small red square at the top on a white background",
     "action_editing"),
    ("a small red circle at the top on a white background", "a small red circle at the top on a striped gray background",
     "scene_editing"),
    ("a small red circle at the top on a white background",
     "a small red circle at the top and a large blue square at the bottom on a white background", "object_adding"),
    ("a small red circle at the top and a large blue square at the bottom on a white background",
     "a small red circle at the top on a white background", "object_adding"),
    ("a small red circle at the top on a white background",
     "an outline drawing of a small red circle at the top on a white background", "style_editing"),
]


@pytest.mark.parametrize("source, target, task", RULE_CASES)
def test_rule_based_fallback(source, target, task):
    decision = classify_by_rules(source, target)
    assert decision.task == task, decision.rule
    assert decision.rule


def test_rules_on_the_shapes_validation_edits():
    from diffusers_uip2p.shapes.dataset import split_edits

    edits = split_edits("validation", 200)
    right = sum(classify_by_rules(e.source.caption(), e.target.caption()).task == e.category for e in edits)
    assert right / len(edits) >= 0.95


@pytest.fixture(scope="module")
def pipe(components):
    pipe = AutoEditPipeline(**components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def inversion(pipe, image):
    return pipe.invert(image, SOURCE, num_inference_steps=4, guidance_scale=3.0)


def test_auto_routes_by_rules_without_classifier(pipe, inversion):
    out = pipe(TARGET, inversion=inversion, edit_method="auto", output_type="latent")
    assert (out.edit_task, out.edit_method) == ("object_replacement", "p2p")
    assert out.task_rule and out.task_probabilities is None and out.source_prompt == SOURCE
    same = pipe(TARGET, inversion=inversion, edit_method="p2p", output_type="latent")
    assert torch.equal(out.latents, same.latents), "auto must run exactly the method it reports"
    styled = pipe("an outline drawing of " + SOURCE, inversion=inversion, edit_method="auto", output_type="latent")
    assert (styled.edit_task, styled.edit_method, styled.edit_parameters) == ("style_editing", "sdedit",
                                                                              {"strength": 0.5, "target_rule": DEFAULT_TARGET_RULE})


def test_routing_table_and_override(pipe):
    assert DEFAULT_TASK_METHODS == {"object_replacement": "p2p", "action_editing": "masactrl",
                                    "scene_editing": "p2p", "object_adding": "sdedit", "style_editing": "sdedit"}
    route = pipe.route_edit(SOURCE, TARGET, task_methods={"object_replacement": "direct"})
    assert (route.task, route.method) == ("object_replacement", "direct")
    with pytest.raises(ValueError, match="`task_methods` must be one of object_replacement.*got 'recolour'"):
        pipe.route_edit(SOURCE, TARGET, task_methods={"recolour": "p2p"})
    with pytest.raises(ValueError, match=r"`task_methods\['scene_editing'\]` must be one of direct"):
        pipe.route_edit(SOURCE, TARGET, task_methods={"scene_editing": "magic"})


def test_a_pipeline_ships_its_own_routing_table(components, tmp_path):
    pipe = AutoEditPipeline(**components, task_methods={"object_replacement": "masactrl"})
    assert pipe.route_edit(SOURCE, TARGET).method == "masactrl"
    assert pipe.route_edit(SOURCE, TARGET, task_methods="paper").method == "p2p"
    assert pipe.route_edit(SOURCE, TARGET, task_methods={"object_replacement": "direct"}).method == "direct"
    pipe.save_pretrained(tmp_path)
    loaded = AutoEditPipeline.from_pretrained(tmp_path)
    assert loaded.config.task_methods == {"object_replacement": "masactrl"}
    with pytest.raises(ValueError, match="must be a dict of task → method or 'paper'"):
        pipe.route_edit(SOURCE, TARGET, task_methods="mine")
    with pytest.raises(ValueError, match=r"`task_methods\['object_adding'\]` must be one of"):
        AutoEditPipeline(**components, task_methods={"object_adding": "nope"})


def test_auto_with_a_classifier_records_probabilities(components, inversion):
    pipe = AutoEditPipeline(**components, task_classifier=tiny_classifier())
    pipe.set_progress_bar_config(disable=True)
    out = pipe(TARGET, inversion=inversion, edit_method="auto", output_type="latent",
               task_methods={task: "direct" for task in EDIT_TASKS})
    assert out.edit_task in EDIT_TASKS and out.edit_method == "direct" and out.task_rule is None
    assert set(out.task_probabilities) == set(EDIT_TASKS)
    assert abs(sum(out.task_probabilities.values()) - 1) < 1e-5
    assert out.edit_task == max(out.task_probabilities, key=out.task_probabilities.get)


def test_auto_bad_input(pipe, inversion, image):
    with pytest.raises(ValueError, match="applies to edit_method='auto' only"):
        pipe(TARGET, inversion=inversion, edit_method="p2p", task_methods={"style_editing": "p2p"})
    with pytest.raises(ValueError, match="one target prompt at a time"):
        pipe([TARGET, TARGET], inversion=inversion, edit_method="auto")
    with pytest.raises(ValueError, match="`source_prompt` is required with `image`.*`captioner`"):
        pipe(TARGET, image=image, edit_method="auto")


def tiny_blip(directory):
    """A randomly initialised BLIP captioner with a 15-word BERT vocabulary, built offline."""
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "blue", "circle", "square", "on", "white",
             "background", "photo", "of"]
    vocab_file = os.path.join(directory, "vocab.txt")
    with open(vocab_file, "w") as f:
        f.write("\n".join(words))
    tokenizer = BertTokenizer(vocab_file, bos_token="[CLS]")
    torch.manual_seed(0)
    config = BlipConfig(
        text_config=dict(vocab_size=len(words), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=37, max_position_embeddings=64, bos_token_id=2, sep_token_id=3,
                         pad_token_id=0),
        vision_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                           image_size=32, patch_size=8),
        projection_dim=32)
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer)
    return BlipForConditionalGeneration(config).eval(), processor


def test_blip_writes_the_source_prompt(tmp_path, components, image):
    captioner, processor = tiny_blip(str(tmp_path))
    pipe = AutoEditPipeline(**components, captioner=captioner, caption_processor=processor)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(TARGET, image=image, edit_method="auto", num_inference_steps=3, guidance_scale=2.0,
               output_type="latent")
    inputs = processor(images=image, return_tensors="pt")
    expected = processor.decode(captioner.generate(**inputs, max_new_tokens=40)[0], skip_special_tokens=True)
    assert out.source_prompt == expected.strip() and out.source_prompt
    assert out.edit_task in EDIT_TASKS and out.task_rule
    pipe.save_pretrained(tmp_path / "pipe")
    loaded = AutoEditPipeline.from_pretrained(tmp_path / "pipe")
    assert type(loaded.captioner).__name__ == "BlipForConditionalGeneration"
    assert type(loaded.caption_processor).__name__ == "BlipProcessor" and loaded.task_classifier is None


def test_training_script_generalises_to_unseen_words_and_templates(tmp_path):
    """Train on the 10,000 generated train triples, test on the 1,000 of the split whose templates and content
    words never appear in training: the issue's bar, >= 95 % in under two minutes on a CPU. The tiny text
    encoder knows each word's class and the class's broader kind (`word_class_text_encoder`), as CLIP's
    pretraining would; it was never shown a task label. Measured 0.973 (train accuracy 1.000), the whole
    test 42-47 s on 1 thread; the same run as `benchmarks/task_classifier.py` (RESULTS.md). The bar is met at
    this seed, not at every one: seeds 1 and 2 give 0.957 and 0.943."""
    import time

    from diffusers_uip2p.classifier import triples
    from diffusers_uip2p.testing import word_class_text_encoder
    from diffusers_uip2p.training.train_task_classifier import main

    start = time.time()
    text_encoder, tokenizer = word_class_text_encoder(triples.words_by_class(), hidden_size=32,
                                                      class_groups=triples.class_groups())
    text_encoder.save_pretrained(tmp_path / "encoder" / "text_encoder")
    tokenizer.save_pretrained(tmp_path / "encoder" / "tokenizer")
    scores = main(["--pretrained_model_name_or_path", str(tmp_path / "encoder"), "--output_dir", str(tmp_path / "out"),
                   "--hidden_dim", "64", "--num_layers", "2", "--num_heads", "4", "--num_epochs", "3",
                   "--learning_rate", "1e-3"])
    assert time.time() - start < 120
    assert scores["all"] >= 0.95, scores  # chance is 0.2; the rules get 0.927 on these pairs
    loaded = EditTaskClassifier.from_pretrained(tmp_path / "out")
    assert loaded.config.input_dim == 32 and loaded.config.compare_tokens == "changes"
    assert (tmp_path / "out" / "README.md").is_file()


def test_pipeline_with_classifier_saves_and_loads(tmp_path, components):
    from diffusers import StableDiffusionPipeline

    pipe = AutoEditPipeline(**components, task_classifier=tiny_classifier())
    pipe.save_pretrained(tmp_path)
    loaded = AutoEditPipeline.from_pretrained(tmp_path)
    args = (torch.randn(1, 77, 32), torch.randn(1, 77, 32))
    assert torch.allclose(loaded.task_classifier.eval()(*args), pipe.task_classifier(*args), atol=1e-6)
    assert loaded.route_edit(SOURCE, TARGET).probabilities is not None
    sd = StableDiffusionPipeline.from_pretrained(tmp_path, safety_checker=None, feature_extractor=None)
    assert type(sd.unet).__name__ == "UNet2DConditionModel"  # the extra component does not stop a stock pipeline


def test_training_into_a_pipeline_folder(tmp_path, components):
    from diffusers_uip2p.training.train_task_classifier import main

    AutoEditPipeline(**components).save_pretrained(tmp_path)
    main(["--pretrained_model_name_or_path", str(tmp_path), "--add_to_pipeline", "--shapes", "--num_shapes_train",
          "64", "--num_shapes_test", "16", "--hidden_dim", "16", "--num_layers", "1", "--num_heads", "2",
          "--num_epochs", "1"])
    pipe = AutoEditPipeline.from_pretrained(tmp_path)
    assert isinstance(pipe.task_classifier, EditTaskClassifier)
    assert (tmp_path / "task_classifier" / "README.md").is_file()
    assert pipe.route_edit(SOURCE, TARGET).probabilities is not None
    with pytest.raises(SystemExit):
        main(["--pretrained_model_name_or_path", str(tmp_path), "--add_to_pipeline", "--output_dir", "x"])


def test_a_bad_triples_file_names_its_line(tmp_path):
    from diffusers_uip2p.classifier.triples import read_triples

    path = tmp_path / "bad.jsonl"
    path.write_text('{"source": "a cat", "target": "a dog", "task": "object_replacement"}\n'
                    '{"source": "a cat", "target": "a dog", "task": "recolour"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: `task` must be one of .*got 'recolour'"):
        read_triples(path)
