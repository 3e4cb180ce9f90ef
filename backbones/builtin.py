"""The built-in backbones, registered through the `cl_bench` entry points like any plugin."""

from __future__ import annotations

from cl_bench import BackboneSpec, hookimpl


def _tiny_clip_weights(params):
    from .tiny_clip import weights_file

    return weights_file(params)


def _vit_b16_weights(params):
    from .vit_b16 import weights_file

    return weights_file(params)


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
    ]
