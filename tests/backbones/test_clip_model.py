"""The text-head classifier: label spaces, prompts, text-feature caching, preprocessing."""

import pytest
import torch
import torch.nn.functional as F
from toys import toy_model

from cl_bench.backbones.clip import LAYER_KINDS
from cl_bench.errors import UserError

PROMPTS = [["a photo of a cat.", "a drawing of a cat."], ["a photo of a dog."], ["a photo of a bird."]]


@pytest.fixture
def model():
    m = toy_model()
    m.set_classes(PROMPTS)
    return m.eval()


def test_logits_are_scaled_cosines_of_mean_prompt_features(model):
    images = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        logits = model(images)
        image = F.normalize(model.clip.encode_image(model.preprocess(images)), dim=-1)
        rows = []
        for prompts in PROMPTS:  # an independent restatement: mean of normalised prompt features, renormalised
            feats = F.normalize(model.clip.encode_text(model.tokenizer(prompts, context_length=16)), dim=-1)
            rows.append(F.normalize(feats.mean(0), dim=-1))
        expected = model.clip.logit_scale.exp() * image @ torch.stack(rows).t()
    assert torch.allclose(logits, expected, atol=1e-5)


def test_classes_outside_the_label_space_score_minus_infinity(model):
    model.set_label_space([2, 0])
    with torch.no_grad():
        logits = model(torch.rand(3, 1, 28, 28))
    assert torch.isinf(logits[:, 1]).all() and (logits[:, 1] < 0).all()
    assert torch.isfinite(logits[:, [0, 2]]).all()
    with pytest.raises(ValueError):
        model.set_label_space([0, 3])


def test_text_features_are_cached_in_eval_and_recomputed_after_training(model):
    model.set_label_space([0, 1])
    images = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        before = model(images)
        model.clip.text_projection.mul_(-1.0)  # weights change without any notice...
        stale = model(images)
    assert torch.equal(before, stale)  # ...so eval still uses the cache
    model.train()
    model.eval()  # a phase change clears the cache
    with torch.no_grad():
        fresh = model(images)
    assert torch.allclose(fresh[:, :2], -before[:, :2], atol=1e-5)


def test_trainable_text_tower_gets_gradients_through_the_head(model):
    model.train()
    model.set_text_trainable(True)
    model.clip.text_projection.requires_grad_(True)
    model.set_label_space([0, 1, 2])
    loss = F.cross_entropy(model(torch.rand(2, 1, 28, 28)), torch.tensor([0, 2]))
    loss.backward()
    assert model.clip.text_projection.grad is not None and model.clip.text_projection.grad.abs().sum() > 0


def test_prompts_longer_than_the_context_are_refused():
    m = toy_model()
    with pytest.raises(UserError, match="does not fit"):
        m.set_classes([["a photo of a " + "very " * 20 + "long name."]])


def test_preprocessing_accepts_grey_uint8_and_other_sizes(model):
    grey = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)
    as_float = grey.float() / 255
    assert torch.allclose(model.preprocess(grey), model.preprocess(as_float.expand(-1, 3, -1, -1)))
    assert model.preprocess(torch.rand(2, 3, 56, 56)).shape == (2, 3, 28, 28)


def test_adaptable_layers_cover_both_towers(model):
    layers = model.adaptable_layers()
    blocks = len(model.clip.visual.transformer.resblocks) + len(model.clip.transformer.resblocks)
    assert len(layers) == blocks * len(LAYER_KINDS)
    assert {(layer.tower, layer.kind) for layer in layers} == {(t, k) for t in ("image", "text") for k in LAYER_KINDS}
    names = dict(model.named_modules())
    assert all(names[layer.name] is layer.module for layer in layers)
    only = model.adaptable_layers(towers=["text"], layers=["q", "fc"])
    assert {(layer.tower, layer.kind) for layer in only} == {("text", "q"), ("text", "fc")}
    with pytest.raises(UserError):
        model.adaptable_layers(layers=["qq"])


def test_tower_parameters_split_the_model_without_the_logit_scale(model):
    image = {id(p) for p in model.tower_parameters("image")}
    text = {id(p) for p in model.tower_parameters("text")}
    everything = {id(p) for p in model.parameters()}
    assert image.isdisjoint(text)
    assert everything - image - text == {id(model.clip.logit_scale)}


@pytest.mark.parametrize(("protocol", "spaces"), [("mtil", 3), ("domain-il", 2), ("class-il", 3)])
def test_an_accuracy_row_runs_the_text_tower_once_per_label_space(protocol, spaces):
    """Evaluation in many small batches still encodes each label space's prompts once per row:
    mtil (two task spaces + the control's), domain-il (one shared space + the control's),
    class-il (tasks 1 and 1-2, + the control's)."""
    from toys import toy_plan

    from cl_bench import build
    from cl_bench.running.evaluation import evaluate_row

    parts = build(toy_plan(scenario__protocol=protocol, eval_batch_size=3))
    model, strategy, matrix = parts.model, parts.strategy, parts.matrix
    calls = []
    encode = model.encode_text
    model.encode_text = lambda tokens: calls.append(len(tokens)) or encode(tokens)
    for row in (0, 1):
        calls.clear()
        evaluate_row(strategy, matrix, row)
        assert len(calls) == spaces, (row, calls)
