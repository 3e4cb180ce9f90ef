"""The built-in backbones, registered through the `cl_bench` entry points like any plugin."""

from __future__ import annotations

from cl_bench import TEXT_PROTOCOLS, BackboneSpec, hookimpl

from .language_models import hf_weights, tiny_lm_weights  # light: finding a file imports no model code


def _tiny_clip_weights(params):
    from .tiny_clip import weights_file

    return weights_file(params)


def _vit_b16_weights(params):
    from .vit_b16 import weights_file

    return weights_file(params)


# Truncation as TRACE's (prompts 1024 tokens; a training sequence 1024 + 512); dtype: the weights'
# type once loaded; loss_weighting: each example's mean loss counts the same (TRACE's batch of one
# per device) or every answer token does ("token").
LM_DEFAULTS = {"pretrained": "", "max_prompt_tokens": 1024, "max_answer_tokens": 512, "dtype": "float32", "loss_weighting": "example"}
# What every method trains with on a language model unless its kind_defaults say otherwise:
# TRACE's batch of 32 and constant learning rate, 32 iterations (two passes over a 500-example
# task, TRACE's most common epoch count), adapters on the decoder's attention projections.
# 2: TRACE's joint truncation and per-example loss weighting (issue 34)
LM_VERSION = "2"
LM_METHOD_DEFAULTS = {"towers": ["decoder"], "layers": ["q", "k", "v", "out"], "iters": 32, "batch_size": 32, "schedule": "constant", "grad_accum": 1}


@hookimpl
def cl_bench_backbones() -> list[BackboneSpec]:
    return [
        BackboneSpec(
            name="tiny-clip",
            factory="cl_bench.backbones.tiny_clip:load",
            summary="embedded default: a 3.5M-parameter open_clip CLIP pre-trained by cl_bench on packaged data (weights ship inside)",
            defaults={"pretrained": ""},
            version="1",
            weights_file=_tiny_clip_weights,
        ),
        BackboneSpec(
            name="clip-vit-b16",
            factory="cl_bench.backbones.vit_b16:load",
            summary="open_clip ViT-B-16 (OpenAI weights) from --pretrained PATH or the local Hugging Face cache; never downloads",
            defaults={"pretrained": "", "model": "ViT-B-16", "quick_gelu": True},
            version="1",
            weights_file=_vit_b16_weights,
        ),
        BackboneSpec(
            name="tiny-lm",
            factory="cl_bench.backbones.language_models:load_tiny_lm",
            summary="embedded default of the LLM track: a 1M-parameter Llama-architecture causal LM pre-trained by cl_bench (weights and tokenizer ship inside)",
            kind="causal-lm",
            protocols=TEXT_PROTOCOLS,
            shardable=True,
            defaults=LM_DEFAULTS,
            method_defaults=LM_METHOD_DEFAULTS,
            version=LM_VERSION,
            weights_file=tiny_lm_weights,
        ),
        BackboneSpec(
            name="hf-causal-lm",
            factory="cl_bench.backbones.language_models:load_hf",
            summary="a Llama-style Hugging Face causal LM (LLaMA, Gemma, Mistral, Qwen) from --pretrained DIR, a save_pretrained folder; never downloads",
            kind="causal-lm",
            protocols=TEXT_PROTOCOLS,
            shardable=True,
            defaults=LM_DEFAULTS,
            method_defaults=LM_METHOD_DEFAULTS,
            version=LM_VERSION,
            weights_file=hf_weights,
        ),
    ]
