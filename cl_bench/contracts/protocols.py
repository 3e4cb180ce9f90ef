"""The evaluation protocols and backbone kinds: the bottom vocabulary every layer shares."""

from __future__ import annotations

PROTOCOLS = ("class-il", "domain-il", "mtil", "x-tail", "instruct")


IMAGE_PROTOCOLS = ("class-il", "domain-il", "mtil", "x-tail")  # classification by image


TEXT_PROTOCOLS = ("instruct",)  # generated answers, scored per task


# Backbone kinds of the built-in backbones (a plugin may declare others).
BACKBONE_KINDS = ("clip", "causal-lm")

