"""Attention control on the tiny UNet: processors installed and restored, map recording, P2P, MasaCtrl.

The tiny UNet has 8×8 latents and four transformer blocks, all at the 4×4 level. Prompts use the Shapes
world tokenizer (one token per world word), cut to 12 tokens where matrices are written out by hand.
"""

import PIL.Image
import pytest
import torch

from diffusers_uip2p.attention import (AttentionController, AttentionRefine, AttentionReplace, AttentionReweight,
                                       AttentionStore, ControlledAttnProcessor, LocalBlend,
                                       MaskedMutualSelfAttention, MutualSelfAttention, attention_control,
                                       draw_token_maps, refine_alignment, replace_mapper, unet_layers,
                                       word_token_indices)
from diffusers_uip2p.attention.controller import LayerInfo
from diffusers_uip2p.attention.tokens import word_spans
from diffusers_uip2p.shapes.tokenizer import shapes_tokenizer
from diffusers_uip2p.testing import tiny_text_to_image_components

PROMPTS = ["a red circle on the left", "a blue circle on the left"]


@pytest.fixture(scope="module")
def unet():
    return tiny_text_to_image_components()["unet"]


@pytest.fixture(scope="module")
def tokenizer():
    return shapes_tokenizer()


@pytest.fixture(scope="module")
def short_tokenizer():
    return shapes_tokenizer(model_max_length=12)


@pytest.fixture
def inputs():
    """Two prompts' latents under classifier-free guidance: UNet batch [uncond src, uncond tgt, cond src, cond tgt]."""
    generator = torch.Generator().manual_seed(1)
    latents = torch.randn(2, 4, 8, 8, generator=generator)
    embeddings = torch.randn(4, 77, 32, generator=generator)
    return torch.cat([latents] * 2), embeddings


def run_unet(unet, inputs, controller=None):
    sample, embeddings = inputs
    with torch.no_grad():
        if controller is None:
            return unet(sample, 500, encoder_hidden_states=embeddings).sample
        with attention_control(unet, controller):
            return unet(sample, 500, encoder_hidden_states=embeddings).sample


def ready(controller, step=0, num_steps=10):
    controller.configure(2, do_classifier_free_guidance=True)
    controller.set_step(step, num_steps)
    return controller


# ------------------------------------------------------------------ layers and installation


def test_layers_in_forward_order(unet):
    layers = unet_layers(unet)
    assert [(layer.place, layer.block_index, layer.is_cross) for layer in layers] == [
        ("down", 0, False), ("down", 0, True), ("mid", 1, False), ("mid", 1, True),
        ("up", 2, False), ("up", 2, True), ("up", 3, False), ("up", 3, True)]
    assert {layer.resolution for layer in layers} == {4} and {layer.level for layer in layers} == {1}
    assert layers[0].name == "down_blocks.1.attentions.0.transformer_blocks.0.attn1.processor"


def test_only_wanted_layers_change_and_all_are_restored(unet, inputs):
    original = dict(unet.attn_processors)
    controller = ready(MutualSelfAttention(start_step=0, start_layer=2))
    wanted = {layer.name for layer in unet_layers(unet) if not layer.is_cross and layer.block_index >= 2}
    with attention_control(unet, controller):
        inside = unet.attn_processors
        for name, processor in inside.items():
            if name in wanted:
                assert isinstance(processor, ControlledAttnProcessor)
            else:
                assert processor is original[name]
        unet(inputs[0], 500, encoder_hidden_states=inputs[1])
    assert all(unet.attn_processors[name] is processor for name, processor in original.items())

    with pytest.raises(RuntimeError, match="boom"), attention_control(unet, controller):
        raise RuntimeError("boom")
    assert all(unet.attn_processors[name] is processor for name, processor in original.items())


def test_passthrough_matches_plain_attention_and_is_deterministic(unet, inputs, tokenizer):
    controller = AttentionRefine(PROMPTS, tokenizer).passthrough()
    plain = run_unet(unet, inputs)
    first, second = run_unet(unet, inputs, controller), run_unet(unet, inputs, controller)
    assert torch.allclose(first, plain, atol=1e-5)
    assert torch.equal(first, second)


# ------------------------------------------------------------------ recording


def test_cross_attention_rows_sum_to_one_and_token_maps(unet, inputs, tokenizer):
    controller = ready(AttentionController())
    store = AttentionStore(controller, self_attention=True)
    run_unet(unet, inputs, controller)
    cross = store.maps()
    assert len(cross) == 4 and all(m.shape == (4, 4, 4, 77) for m in cross.values())
    for maps in [*cross.values(), *store.maps(cross=False).values()]:
        assert torch.allclose(maps.sum(-1), torch.ones(()), atol=1e-5)
    assert store.aggregate().shape == (2, 4, 4, 77)  # conditional rows
    assert store.aggregate(rows=range(4)).shape == (4, 4, 4, 77)

    token_maps = store.token_maps(tokenizer, PROMPTS[1], prompt_index=1)
    assert [token for token, _ in token_maps] == ["a", "blue", "circle", "on", "the", "left"]
    assert torch.equal(token_maps[1][1], store.aggregate()[1, ..., 2])
    picture = draw_token_maps(PIL.Image.new("RGB", (16, 16), "gray"), token_maps, cell_size=32, columns=4)
    assert picture.size == (4 * 32, 2 * (32 + 16))


def test_store_with_grad_backpropagates_into_the_unet(unet, inputs):
    controller = ready(AttentionController())
    store = AttentionStore(controller, with_grad=True)
    unet.zero_grad()
    with attention_control(unet, controller):
        unet(inputs[0], 500, encoder_hidden_states=inputs[1])
    store.aggregate()[..., 1].pow(2).sum().backward()
    grad = unet.get_submodule("down_blocks.1.attentions.0.transformer_blocks.0.attn2").to_q.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    unet.zero_grad()


def test_store_selects_steps(unet, inputs):
    controller = ready(AttentionController(), step=0)
    store = AttentionStore(controller, steps={1})
    run_unet(unet, inputs, controller)
    assert store.maps() == {}
    controller.set_step(1, 10)
    run_unet(unet, inputs, controller)
    assert {step for _, step in store.maps()} == {1}


# ------------------------------------------------------------------ token mappings (hand-worked, 12 tokens)


def test_word_token_indices(short_tokenizer, tokenizer):
    prompt = "A red circle, on the left. hippo"
    spans = word_spans(tokenizer, prompt)
    assert [i for span in spans for i in span.token_ids] == tokenizer(prompt).input_ids[1:-1]
    assert [p for span in spans for p in span.positions] == list(range(1, len(tokenizer(prompt).input_ids) - 1))
    assert word_token_indices(short_tokenizer, "a red cat", "cat") == [3, 4]  # c + at
    assert word_token_indices(short_tokenizer, "A Red circle,", "red circle") == [2, 3, 4]
    with pytest.raises(ValueError, match="'dog'"):
        word_token_indices(short_tokenizer, "a red cat", "dog")


def test_replace_mapper_spreads_a_word_with_more_tokens(short_tokenizer):
    # "cat" is 2 tokens (positions 3-4), "hippo" 5 (positions 3-7); end token 5 → 8.
    mapper = replace_mapper(short_tokenizer, "a red cat", "a red hippo")
    expected = torch.zeros(12, 12)
    expected[0, 0] = expected[1, 1] = expected[2, 2] = 1
    expected[3:5, 3:8] = 1 / 5
    expected[5, 8] = expected[6, 9] = expected[7, 10] = expected[8, 11] = 1
    assert torch.equal(mapper, expected)


def test_replace_needs_equal_word_counts(short_tokenizer):
    with pytest.raises(ValueError, match=r"different word counts \(3 and 4\).*refine"):
        replace_mapper(short_tokenizer, "a red circle", "a big red circle")
    with pytest.raises(ValueError, match="refine"):
        AttentionReplace(["a red circle", "a big red circle"], short_tokenizer)


@pytest.mark.parametrize("source, target, mapper, alphas", [
    # added word: "red" is new, everything after it shifts by one
    ("a circle", "a red circle", [0, 1, 0, 2, 3, 4, 5, 6, 7, 8, 9, 10], [1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1]),
    # replaced multi-token word: the 5 tokens of "hippo" are new, the end token comes from position 5
    ("a red cat", "a red hippo", [0, 1, 2, 0, 0, 0, 0, 0, 5, 6, 7, 8], [1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 1, 1]),
    # reordered words: every word finds its source word
    ("a red circle and a blue square", "a blue square and a red circle",
     [0, 5, 6, 7, 4, 1, 2, 3, 8, 9, 10, 11], [1] * 12),
])
def test_refine_alignment(short_tokenizer, source, target, mapper, alphas):
    got_mapper, got_alphas = refine_alignment(short_tokenizer, source, target)
    assert got_mapper.tolist() == mapper
    assert got_alphas.tolist() == alphas


def test_refine_padding_can_follow_the_reference_mapping(short_tokenizer):
    """The P2P reference maps target padding j to source j; ours (the default) to j − Δ."""
    follow, _ = refine_alignment(short_tokenizer, "a circle", "a red circle")
    same, alphas = refine_alignment(short_tokenizer, "a circle", "a red circle", padding="same_position")
    assert follow.tolist() == [0, 1, 0, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert same.tolist() == [0, 1, 0, 2, 3, 5, 6, 7, 8, 9, 10, 11]  # the end token (4) still reads the source's
    assert alphas.tolist() == [1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1]
    shorter, _ = refine_alignment(short_tokenizer, "a red circle", "a circle", padding="same_position")
    assert shorter.tolist()[:5] == [0, 1, 3, 4, 4]  # padding at 4 reads position 4, the source's end token
    with pytest.raises(ValueError, match="`padding` must be one of follow_end, same_position"):
        refine_alignment(short_tokenizer, "a circle", "a red circle", padding="reference")


def _layers(levels):
    """Self- and cross-attention LayerInfo at the given levels (a 64×64-latent UNet's resolutions)."""
    return [LayerInfo(f"l{i}.{kind}", kind == "cross", "down", i, level, 64 >> level)
            for i, level in enumerate(levels) for kind in ("self", "cross")]


@pytest.mark.parametrize("levels, min_level, replaced", [
    ([0, 1, 2, 3], 2, {2, 3}),  # SD 1.x: 16×16 and 8×8 only, the P2P notebooks' choice (the default)
    ([0, 1, 2, 3], 1, {1, 2, 3}),  # every level but the highest-resolution one
    ([0, 1, 2], 2, {2}),  # the Shapes UNet: its 4×4 middle block
    ([1], 2, {1}),  # a UNet shallower than the default: its deepest level
])
def test_p2p_self_attention_levels(tokenizer, levels, min_level, replaced):
    kwargs = {} if min_level == 2 else {"self_replace_min_level": min_level}
    controller = AttentionReplace(PROMPTS, tokenizer, **kwargs)
    controller.bind(_layers(levels))
    assert {layer.level for layer in controller.layers if not layer.is_cross and controller.edits(layer)} == replaced
    assert all(controller.edits(layer) for layer in controller.layers if layer.is_cross)


# ------------------------------------------------------------------ Prompt-to-Prompt


@pytest.mark.parametrize("make", [
    lambda tok: AttentionReplace(PROMPTS, tok),
    lambda tok: AttentionRefine(PROMPTS, tok, cross_replace_steps={"default_": 0.8, "blue": (0.0, 0.2)}),
    lambda tok: AttentionReweight(PROMPTS, tok, {"blue": 2.0}, previous=AttentionRefine(PROMPTS, tok)),
], ids=["replace", "refine", "reweight"])
def test_prompt_to_prompt_leaves_source_rows_untouched(unet, inputs, tokenizer, make):
    controller = ready(make(tokenizer))
    edited = run_unet(unet, inputs, controller)
    passthrough = run_unet(unet, inputs, controller.passthrough())
    assert torch.equal(edited[:3], passthrough[:3])  # uncond rows and the conditional source row
    assert not torch.allclose(edited[3], passthrough[3])


def test_reweight_scales_the_word_on_top_of_the_source(unet, inputs, tokenizer):
    prompts = [PROMPTS[0], PROMPTS[0]]
    controller = ready(AttentionReweight(prompts, tokenizer, {"red": 2.0}, cross_replace_steps=1.0))
    store = AttentionStore(controller)
    run_unet(unet, inputs, controller)
    for maps in store.maps().values():
        source, target = maps[2], maps[3]
        assert torch.allclose(target[..., 2], 2 * source[..., 2], atol=1e-6)
        assert torch.allclose(target[..., 3:], source[..., 3:], atol=1e-6)


def test_replace_and_refine_take_the_mapped_source_attention(unet, inputs, tokenizer):
    replace = ready(AttentionReplace(PROMPTS, tokenizer, cross_replace_steps=1.0))
    store = AttentionStore(replace)
    run_unet(unet, inputs, replace)
    for maps in store.maps().values():  # one token per word: the mapper is the identity
        assert torch.allclose(maps[3], maps[2], atol=1e-7)

    prompts = ["a circle on the left", "a red circle on the left"]
    refine = ready(AttentionRefine(prompts, tokenizer, cross_replace_steps=1.0))
    store = AttentionStore(refine)
    run_unet(unet, inputs, refine)
    for maps in store.maps().values():  # "red" (position 2) is new; the rest shifts by one token
        assert torch.allclose(maps[3][..., 3:], maps[2][..., 2:-1], atol=1e-7)
        assert torch.allclose(maps[3][..., :2], maps[2][..., :2], atol=1e-7)


def test_prompt_to_prompt_outside_its_windows_is_plain(unet, inputs, tokenizer):
    controller = ready(AttentionReplace(PROMPTS, tokenizer, cross_replace_steps=0.4, self_replace_steps=0.4), step=5)
    assert torch.equal(run_unet(unet, inputs, controller), run_unet(unet, inputs, controller.passthrough()))


def test_prompt_to_prompt_bad_input(tokenizer):
    with pytest.raises(ValueError, match="cross_replace_steps"):
        AttentionRefine(PROMPTS, tokenizer, cross_replace_steps=(0.5, 0.2))
    with pytest.raises(ValueError, match="'green'"):
        AttentionRefine(PROMPTS, tokenizer, cross_replace_steps={"green": 0.3})
    with pytest.raises(ValueError, match="source and at least one target"):
        AttentionRefine(PROMPTS[:1], tokenizer)
    with pytest.raises(ValueError, match="built for 2 prompts"):
        AttentionRefine(PROMPTS, tokenizer).configure(3, True)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="`self_replace_min_level` must be an int ≥ 0"):
            AttentionRefine(PROMPTS, tokenizer, self_replace_min_level=bad)


def test_local_blend_keeps_latents_outside_the_mask(unet, tokenizer):
    controller = AttentionController().configure(2, do_classifier_free_guidance=True)
    store = AttentionStore(controller)
    layer = next(layer for layer in unet_layers(unet) if layer.is_cross)
    controller.bind(unet_layers(unet))
    controller.observe_unet_input(torch.zeros(4, 4, 8, 8))
    controller.set_step(5, 10)
    probs = torch.zeros(4, 16, 77)  # one head; 4×4 queries
    probs[2, 0, 2] = 1.0  # source's "red" at the top-left map pixel
    probs[3, 15, 2] = 1.0  # target's "blue" at the bottom-right one
    store.record(probs, 1, layer)

    blend = LocalBlend(store, PROMPTS, tokenizer, ["red", "blue"], start=0.2)
    masks = blend.mask((8, 8))[:, 0]
    # 3×3 max-pooling grows each pixel to 2×2, upsampling to 8×8 to a 4×4 quadrant.
    assert masks[0, :4, :4].all() and masks[0].sum() == 16
    assert masks[1, 4:, 4:].all() and masks[1].sum() == 16

    latents = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    blended = blend(latents, step=5)
    inside = masks[0] | masks[1]
    assert torch.equal(blended[0], latents[0])
    assert torch.equal(blended[1][:, inside], latents[1][:, inside])
    assert torch.equal(blended[1][:, ~inside], latents[0][:, ~inside])
    assert torch.equal(blend(latents, step=1), latents)  # before start=0.2 of 10 steps


def test_local_blend_runs_on_recorded_maps(unet, inputs, tokenizer):
    controller = ready(AttentionRefine(PROMPTS, tokenizer))
    store = AttentionStore(controller)
    run_unet(unet, inputs, controller)
    latents = torch.randn(2, 4, 8, 8)
    blended = LocalBlend(store, PROMPTS, tokenizer, ["red", ["blue", "circle"]], start=0.0)(latents, 0)
    assert blended.shape == latents.shape and torch.equal(blended[0], latents[0])


def test_local_blend_missing_word(tokenizer):
    store = AttentionStore(AttentionController())
    with pytest.raises(ValueError, match="'green'"):
        LocalBlend(store, PROMPTS, tokenizer, ["red", "green"])
    with pytest.raises(ValueError, match="one entry"):
        LocalBlend(store, PROMPTS, tokenizer, ["red"])


# ------------------------------------------------------------------ MasaCtrl


def test_mutual_self_attention_after_the_last_step_is_plain(unet, inputs):
    controller = ready(MutualSelfAttention(start_step=10, start_layer=0), step=9)
    assert torch.equal(run_unet(unet, inputs, controller), run_unet(unet, inputs, controller.passthrough()))


@pytest.mark.parametrize("make", [
    lambda tok: MutualSelfAttention(start_step=0, start_layer=1),
    lambda tok: MaskedMutualSelfAttention(PROMPTS, tok, ["circle", "circle"], start_step=0, start_layer=1),
], ids=["mutual", "masked"])
def test_mutual_self_attention_edits_targets_only(unet, inputs, tokenizer, make):
    controller = ready(make(tokenizer))
    edited = run_unet(unet, inputs, controller)
    passthrough = run_unet(unet, inputs, controller.passthrough())
    assert torch.equal(edited[[0, 2]], passthrough[[0, 2]])  # sources of both guidance halves
    assert not torch.allclose(edited[[1, 3]], passthrough[[1, 3]])
    assert torch.isfinite(edited).all()


def test_mutual_self_attention_start_layer(unet, inputs):
    original = dict(unet.attn_processors)
    with pytest.raises(ValueError, match="start_layer.*4 self-attention layers"), \
            attention_control(unet, MutualSelfAttention(start_layer=4)):
        pass
    assert all(unet.attn_processors[name] is processor for name, processor in original.items())
    assert ready(MutualSelfAttention()).source_of_each_row() == [0, 0, 2, 2]  # per guidance half
    scaled = MutualSelfAttention(start_layer=10, total_layers=16)  # MasaCtrl's SD 1.x default, rescaled
    scaled.bind(unet_layers(unet))
    assert scaled.first_edited == 2


# ------------------------------------------------------------------ bookkeeping errors


def test_layout_and_step_errors(unet, inputs, tokenizer):
    controller = AttentionController()
    with pytest.raises(ValueError, match="index"):
        controller.set_step(10, 10)
    with pytest.raises(ValueError, match="num_prompts"):
        controller.configure(0, True)
    with pytest.raises(ValueError, match="batch of 4"):
        run_unet(unet, inputs, AttentionController().configure(1, do_classifier_free_guidance=True))
    with pytest.raises(RuntimeError, match="set_step"):
        run_unet(unet, inputs, AttentionReplace(PROMPTS, tokenizer).configure(2, True))
    with pytest.raises(TypeError, match="store.controller"):
        with attention_control(unet, AttentionStore(controller)):
            pass
