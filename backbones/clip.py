"""`ClipModel`: an open_clip CLIP used as a zero-shot text-head classifier.

Logits are `scale * normalise(image features) @ normalise(text features)ᵀ`, where the text
feature of a class is the normalised mean over its prompts ("a photo of a {class}." and friends).
The model scores the classes of its current *label space* (set by the strategy per protocol) and
returns logits over every class of the stream, with -inf outside the label space, so targets keep
their global ids everywhere.

Images arrive as float tensors in [0, 1] (or uint8), 1 or 3 channels, any size; the model resizes
and normalises them on its device, so one data set serves every backbone.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol, cast, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cl_bench import AdaptableLayer, Backbone, TaskContext, UserError

from .attention import SplitAttention, split_attention_

# The layers methods adapt (docs/backbones.md, Adaptable layers), named by kind.
LAYER_KINDS = ("q", "k", "v", "out", "fc", "proj")
_ATTENTION_ATTRS = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "out": "out_proj"}
_MLP_ATTRS = {"fc": "c_fc", "proj": "c_proj"}
TOWERS = ("image", "text")


@runtime_checkable
class Conditioning(Protocol):
    """Model states chosen per input, for methods whose weights depend on the input's task.

    `ClipModel.forward` asks `assign` for each image's state (an int for the whole batch, or a
    long tensor with one state per image), then, for each state present, calls `activate(state)`
    and scores those images with image and text features computed in that state. Text features
    are cached per label space and state. MoE-LoRA uses it to pick a task's router at test time.
    """

    def assign(self, model: ClipModel, images: Tensor) -> int | Tensor: ...

    def activate(self, state: int) -> None: ...


@runtime_checkable
class Head(Protocol):
    """A classifier that replaces (or mixes with) CLIP's text head, for methods that classify in
    feature space: iCaRL's nearest mean of exemplars, RAIL's ridge regression fused with zero-shot.

    `ClipModel` calls `scores(model, image_features, text_scores)` for every batch: the batch's
    normalised image features and the text head's logits over the current label space
    (`model.label_space`, one column per class in that order); it returns logits of the same shape.
    """

    def scores(self, model: ClipModel, image_features: Tensor, text_scores: Tensor) -> Tensor: ...


class ClipModel(Backbone):
    """A CLIP-like backbone with separate q/k/v/out projections and a cached text head."""

    # Buffers (register_buffer), declared for the type checker.
    image_mean: Tensor
    image_std: Tensor
    prompt_tokens: Tensor
    prompt_class: Tensor
    label_space: Tensor

    kind = "clip"

    def __init__(
        self,
        clip: nn.Module,
        tokenizer,
        *,
        name: str,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        weights_sha256: str | None = None,
    ) -> None:
        super().__init__()
        split_attention_(clip)
        self.clip: Any = clip  # an open_clip CLIP: its towers and methods are untyped attributes
        self.tokenizer = tokenizer
        self.backbone_name = name
        self.image_size = image_size
        self.weights_sha256 = weights_sha256
        self.register_buffer("image_mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("prompt_tokens", torch.zeros(0, 1, dtype=torch.long), persistent=False)
        self.register_buffer("prompt_class", torch.zeros(0, dtype=torch.long), persistent=False)
        self.register_buffer("label_space", torch.zeros(0, dtype=torch.long), persistent=False)
        self.num_classes = 0
        self._label_key: tuple[int, ...] = ()
        self._text_cache: dict[tuple[tuple[int, ...], int | None], Tensor] = {}
        self._text_trainable = True  # safe default: recompute text features while training
        self.conditioning: Conditioning | None = None
        self.head: Head | None = None

    # ------------------------------------------------------------------ towers

    def preprocess(self, images: Tensor) -> Tensor:
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False, antialias=True)
        return (x - self.image_mean) / self.image_std

    def encode_image(self, images: Tensor, normalize: bool = True) -> Tensor:
        return self.clip.encode_image(self.preprocess(images), normalize=normalize)

    def encode_text(self, tokens: Tensor, normalize: bool = True) -> Tensor:
        return self.clip.encode_text(tokens, normalize=normalize)

    @property
    def logit_scale(self) -> Tensor:
        return self.clip.logit_scale.exp()

    def tower_parameters(self, tower: str) -> Iterator[nn.Parameter]:
        """Parameters of one tower ("image" or "text"); the logit scale belongs to neither."""
        visual = {id(p) for p in self.clip.visual.parameters()}
        for name, param in self.clip.named_parameters():
            if name == "logit_scale":
                continue
            if (id(param) in visual) == (tower == "image"):
                yield param

    def residual_blocks(self, tower: str) -> list[nn.Module]:
        """The transformer blocks of one tower, input side first (each has ln_1, attn, ln_2, mlp)."""
        if tower not in TOWERS:
            raise UserError(f"unknown tower {tower!r}; towers: image, text")
        transformer = self.clip.visual.transformer if tower == "image" else self.clip.transformer
        return list(transformer.resblocks)

    def adaptable_layers(self, towers: Sequence[str] = TOWERS, layers: Sequence[str] = LAYER_KINDS) -> list[AdaptableLayer]:
        """The attention (q, k, v, out) and MLP (fc, proj) Linears of the chosen towers."""
        unknown = [k for k in layers if k not in LAYER_KINDS] + [t for t in towers if t not in TOWERS]
        if unknown:
            raise UserError(f"unknown layer kind or tower {unknown[0]!r}; kinds: {', '.join(LAYER_KINDS)}; towers: image, text")
        selected = []
        roots = {"image": ("clip.visual.transformer", self.clip.visual.transformer), "text": ("clip.transformer", self.clip.transformer)}
        for tower in towers:
            prefix, transformer = roots[tower]
            for index, block in enumerate(transformer.resblocks):
                if not isinstance(block.attn, SplitAttention):
                    raise TypeError("attention was not split; build the model through ClipModel")
                for kind in layers:
                    if kind in _ATTENTION_ATTRS:
                        parent, attr, where = block.attn, _ATTENTION_ATTRS[kind], "attn"
                    else:
                        parent, attr, where = block.mlp, _MLP_ATTRS[kind], "mlp"
                    selected.append(AdaptableLayer(f"{prefix}.resblocks.{index}.{where}.{attr}", tower, index, kind, parent, attr))
        return selected

    # ------------------------------------------------------------------ the model contract

    def prepare(self, stream) -> None:
        self.set_classes(stream.prompts())

    def set_task_context(self, context: TaskContext) -> None:
        self.set_label_space(context.label_space)

    def trainable_changed(self, params: Iterable[nn.Parameter]) -> None:
        visual = {id(p) for p in self.clip.visual.parameters()}
        self.set_text_trainable(any(id(p) not in visual for p in params))

    # ------------------------------------------------------------------ text head

    def set_classes(self, prompts: Sequence[Sequence[str]]) -> None:
        """Tokenise the prompts of every class of the stream (index = global class id)."""
        texts, owners = [], []
        context = self.clip.context_length
        for class_id, class_prompts in enumerate(prompts):
            if not class_prompts:
                raise ValueError(f"class {class_id} has no prompt")
            for text in class_prompts:
                if len(self.tokenizer.encode(text)) + 2 > context:
                    raise UserError(f"prompt {text!r} does not fit the backbone's text context of {context} tokens; shorten the class name or template")
                texts.append(text)
                owners.append(class_id)
        device = self.prompt_tokens.device
        self.prompt_tokens = self.tokenizer(texts, context_length=context).to(device)
        self.prompt_class = torch.tensor(owners, dtype=torch.long, device=device)
        self.num_classes = len(prompts)
        self.set_label_space(range(self.num_classes))
        self.invalidate_text_cache()

    def set_label_space(self, class_ids: Sequence[int] | Tensor) -> None:
        """Score only these classes (global ids); the others get -inf logits."""
        ids = torch.as_tensor(list(class_ids) if not isinstance(class_ids, Tensor) else class_ids, dtype=torch.long)
        if ids.numel() == 0 or int(ids.min()) < 0 or int(ids.max()) >= self.num_classes:
            raise ValueError(f"label space {ids.tolist()} is outside the {self.num_classes} classes of the stream")
        self.label_space = ids.to(self.label_space.device)
        self._label_key = tuple(ids.tolist())  # kept on the host: no device sync per forward

    def set_text_trainable(self, trainable: bool) -> None:
        """Tell the model whether text weights change during training (if not, cache text features)."""
        self._text_trainable = trainable
        self.invalidate_text_cache()

    def invalidate_text_cache(self) -> None:
        self._text_cache.clear()

    def train(self, mode: bool = True) -> ClipModel:
        self.invalidate_text_cache()  # weights may change between phases
        return super().train(mode)

    def class_text_features(self, class_ids: Tensor, chunk: int = 1024) -> Tensor:
        """Normalised text features, one row per class id (mean over the class's prompts)."""
        position = torch.full((self.num_classes,), -1, dtype=torch.long, device=class_ids.device)
        position[class_ids] = torch.arange(len(class_ids), device=class_ids.device)
        rows = position[self.prompt_class]
        chosen = (rows >= 0).nonzero().squeeze(1)
        tokens, owners = self.prompt_tokens[chosen], rows[chosen]
        features = torch.cat([self.encode_text(tokens[i : i + chunk]) for i in range(0, len(tokens), chunk)])
        summed = features.new_zeros(len(class_ids), features.shape[1]).index_add_(0, owners, features)
        return F.normalize(summed, dim=-1)

    def _label_space_text(self, state: int | None) -> Tensor:
        cacheable = not (self._text_trainable and torch.is_grad_enabled())
        key = (self._label_key, state)
        if cacheable and key in self._text_cache:
            return self._text_cache[key]
        features = self.class_text_features(self.label_space)
        if cacheable:
            self._text_cache[key] = features.detach()
        return features

    def set_conditioning(self, conditioning: Conditioning | None) -> None:
        """Let a method put the model in a state chosen per input (see `Conditioning`)."""
        self.conditioning = conditioning
        self.invalidate_text_cache()

    def set_head(self, head: Head | None) -> None:
        """Let a method classify in feature space (see `Head`); None restores the text head."""
        self.head = head

    def _scores(self, images: Tensor, state: int | None) -> Tensor:
        image_features = self.encode_image(images)
        text_features = self._label_space_text(state)
        scores = self.logit_scale * image_features @ text_features.t().to(image_features.dtype)
        return scores if self.head is None else self.head.scores(self, image_features, scores)

    def features(self, inputs: Tensor) -> Tensor:
        """Normalised image features (what the text head compares with the class texts)."""
        return self.encode_image(inputs)

    def scores(self, inputs: Tensor, classes: Sequence[int]) -> Tensor:
        """Logits over `classes` in the order given (see `Backbone.scores`); the label space the
        strategy set is restored afterwards."""
        space, key = self.label_space, self._label_key
        self.set_label_space(classes)
        try:
            return self.forward(inputs)[:, self.label_space]
        finally:
            self.label_space, self._label_key = space, key

    def forward(self, images: Tensor) -> Tensor:
        if self.conditioning is None:
            scores = self._scores(images, None)
        else:
            states = self.conditioning.assign(self, images)
            if isinstance(states, int):  # one state for the whole batch (training, for instance)
                self.conditioning.activate(states)
                scores = self._scores(images, states)
            else:  # one pass per state present: image and text features both depend on it
                scores = None
                for state in states.unique().tolist():
                    rows = (states == state).nonzero().squeeze(1)
                    self.conditioning.activate(state)
                    part = self._scores(images[rows], state)
                    scores = part.new_zeros(len(images), part.shape[1]) if scores is None else scores
                    scores = scores.index_copy(0, rows, part)
        scores = cast(Tensor, scores)  # set by the loop: a batch holds at least one state
        full = scores.new_full((scores.shape[0], self.num_classes), float("-inf"))
        return full.index_copy(1, self.label_space, scores)
