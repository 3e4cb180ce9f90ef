"""Soft prompts on a language model: `CausalLM.set_prefix`, `l2p` (TRACE's L2P) and `dualprompt`
(MoRAM's TRACE copy) against restatements, and their degenerate cases bit for bit."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from lm_toys import lm_config, tiny_lm

from cl_bench import run
from cl_bench.backbones.causal_lm import PAD
from cl_bench.methods.dualprompt import CLIP_DEFAULTS as DP_DEFAULTS
from cl_bench.methods.dualprompt import LM_DEFAULTS as DP_LM
from cl_bench.methods.dualprompt.method import DualPrompt
from cl_bench.methods.l2p import CLIP_DEFAULTS, LM_DEFAULTS
from cl_bench.methods.l2p.lm import LanguageL2P, make

EXAMPLES = [{"prompt": "what is two plus two?", "answer": "4"}, {"prompt": "hi", "answer": "no"}]


class Task:
    def __init__(self, index: int) -> None:
        self.index = index


def prepended(ids: torch.Tensor, extra: list[int]) -> torch.Tensor:
    """The ids with `extra` tokens put right before each row's first real token."""
    rows = [[t for t in r if t != PAD] for r in ids.tolist()]
    width = max(len(r) for r in rows) + len(extra)
    return torch.tensor([[PAD] * (width - len(r) - len(extra)) + extra + r for r in rows])


def test_a_prefix_is_seen_by_training_and_generation_as_tokens_before_the_row():
    model = tiny_lm()
    embedding = model.lm.get_input_embeddings()
    extra = [5, 17, 33]
    model.set_prefix(lambda ids, embeds: embedding(torch.tensor(extra)).unsqueeze(0).expand(ids.shape[0], -1, -1))
    ids, _ = model.encode_examples(EXAMPLES, "test")
    with_prefix = model.generate(ids, 8)
    model.set_prefix(None)
    assert torch.equal(with_prefix, model.generate(prepended(ids, extra), 8))
    model.train()
    rows, labels = model.encode_examples(EXAMPLES, "train")
    model.set_prefix(lambda ids, embeds: embedding(torch.tensor(extra)).unsqueeze(0).expand(ids.shape[0], -1, -1))
    logits = model(rows)
    assert logits.shape[:2] == rows.shape  # aligned with the ids: the prompt positions are dropped
    model.set_prefix(None)
    plain = model(prepended(rows, extra))[:, len(extra) :]
    real = rows != PAD
    assert torch.allclose(logits[real], plain[real], atol=1e-4)
    model.set_prefix(lambda ids, embeds: embeds[:, :0])  # no vectors: exactly the model without a prefix
    assert torch.equal(model(rows), model.lm(**model._inputs(rows)).logits)


def test_l2p_picks_top_three_by_cosine_of_the_mean_embedding_with_the_initial_prompt_means():
    model = tiny_lm()
    torch.manual_seed(0)
    method = make({**CLIP_DEFAULTS, **LM_DEFAULTS})
    assert isinstance(method, LanguageL2P)
    method.setup(model, None)
    pool = method.pool
    table = model.lm.get_input_embeddings().weight.detach()
    torch.manual_seed(0)  # the prompts are embeddings of uniformly drawn vocabulary ids
    assert torch.equal(pool.prompts.detach(), table[torch.randint(table.shape[0], (10, 5))])
    initial = pool.prompts.detach().clone()
    method.before_experience(model, Task(0))
    model.train()
    rows, labels = model.encode_examples(EXAMPLES, "train")
    seen = {}
    original = method.prefix
    model.set_prefix(lambda ids, embeds: seen.setdefault("prefix", original(ids, embeds)))
    outputs = model(rows)
    for b, row in enumerate(rows.tolist()):
        tokens = [t for t in row if t != PAD]
        query = table[tokens].mean(dim=0)  # padding left out
        cosine = F.cosine_similarity(query.unsqueeze(0), initial.mean(dim=1), dim=-1)
        best = cosine.topk(3).indices
        assert pool.selection[b].tolist() == best.tolist()
        assert torch.equal(seen["prefix"][b], torch.cat([pool.prompts[i] for i in best.tolist()]))
    hand = 0.5 * sum(float((1 - F.cosine_similarity(table[[t for t in row if t != PAD]].mean(0, keepdim=True), initial.mean(dim=1)[pool.selection[b]], dim=-1)).sum()) for b, row in enumerate(rows.tolist())) / 2
    loss = model.loss(outputs, labels) + method.extra_loss(model, (rows, labels), outputs)
    assert float(method.extra_loss(model, (rows, labels), outputs).detach()) == pytest.approx(hand, rel=1e-5)
    loss.backward()
    assert pool.prompts.grad is not None and pool.prompts.grad.abs().sum() > 0
    assert torch.equal(pool.key_matrix().detach(), initial.mean(dim=1))  # the keys are not parameters


def test_dualprompt_puts_e_then_g_uses_the_task_prompt_in_training_and_the_nearest_key_at_test():
    model = tiny_lm()
    torch.manual_seed(0)
    method = DualPrompt({**DP_DEFAULTS, **DP_LM})
    method.setup(model, None)
    method.before_experience(model, Task(3))
    parts = method.prompts
    rows, _ = model.encode_examples(EXAMPLES, "train")
    embeds = model.lm.get_input_embeddings()(rows.clamp_min(0))
    model.train()
    prefix = method._language_prefix(rows, embeds)
    assert prefix.shape == (2, 5, embeds.shape[-1])
    assert torch.equal(prefix[0], torch.cat([parts.pool.prompts[3], parts.general]))  # [E_3; G]
    model.eval()
    with torch.no_grad():
        parts.pool.keys.copy_(torch.randn_like(parts.pool.keys))
        method._language_prefix(rows, embeds)
    mask = (rows != PAD).float().unsqueeze(-1)
    query = (embeds * mask).sum(1) / mask.sum(1)
    expected = F.cosine_similarity(query.unsqueeze(1), parts.pool.keys.detach().unsqueeze(0), dim=-1).argmax(dim=1)
    assert parts.pool.selection.flatten().tolist() == expected.tolist()


@pytest.mark.slow
def test_l2p_with_one_prompt_equals_dualprompt_with_a_g_prompt_alone_and_empty_dualprompt_equals_zeroshot(tmp_path):
    # l2p, pool 1, top 1, pull 0: one shared soft prompt of 5 vectors = dualprompt's G of 5, no E
    l2p = run(lm_config(tmp_path / "l2p", method="l2p", iters=3, **{"method.pool_size": 1, "method.top_n": 1, "method.pull_weight": 0.0, "method.length": 5}))
    dual = run(lm_config(tmp_path / "dual", method="dualprompt", iters=3, **{"method.g_length": 5, "method.e_length": 0, "method.pull_weight": 0.0}))
    assert l2p.acc_matrix == dual.acc_matrix and l2p.control_matrix == dual.control_matrix
    assert l2p.acc_matrix[1] != l2p.acc_matrix[0]  # the prompt did change the answers
    empty = run(lm_config(tmp_path / "empty", method="dualprompt", iters=2, **{"method.g_length": 0, "method.e_length": 0}))
    zeroshot = run(lm_config(tmp_path / "zs", method="zeroshot"))
    assert empty.acc_matrix == zeroshot.acc_matrix and empty.control_matrix == zeroshot.control_matrix
