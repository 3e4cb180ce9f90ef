"""The per-run `Method` protocol: the hooks the shared strategy calls on a method object."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from cl_bench.errors import UserError, shown

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch
    from torch import Tensor, nn

    from cl_bench.contracts.model import Backbone
    from cl_bench.contracts.stream import Experience, Stream

@runtime_checkable
class Method(Protocol):
    """The per-run method object. The shared strategy calls it directly (no pluggy on the hot path).

    Subclass it to inherit the defaults below and override what your method changes. All model
    parameters are frozen before `setup`; the strategy trains exactly `trainable_parameters`.
    """

    def setup(self, model: Backbone, stream: Stream) -> None:
        """Wrap layers, add prompts or experts. Called once, before row 0 is evaluated."""

    def before_experience(self, model: Backbone, experience: Experience) -> None:
        """Grow or reset per-task state before training on `experience`."""

    def trainable_parameters(self, model: Backbone) -> Iterable[nn.Parameter]:
        """The parameters to optimise during the coming experience."""
        return []

    def extra_loss(self, model: Backbone, batch: tuple[Tensor, Tensor], outputs: Tensor) -> Tensor | None:
        """A term added to the cross-entropy loss (None for none)."""
        return None

    def fit(self, model: Backbone, experience: Experience) -> None:
        """Learn the task in closed form (a ridge regression, class means, ...): called in place of
        the optimizer steps when `trainable_parameters` is empty; the default learns nothing."""

    def before_update(self, model: Backbone, params: list[nn.Parameter]) -> None:
        """Change the step's gradients (`p.grad` of `params`, the trainable parameters) in place
        after backward (and after every micro-batch's, with gradient accumulation), before the
        optimizer steps: gradient projection (GEM, OGD). Called only where a method overrides it."""

    def make_optimizer(self, params: list[nn.Parameter], hparams: Mapping[str, Any]) -> torch.optim.Optimizer | None:
        """A custom optimiser over `params`, or None for AdamW(lr, weight_decay)."""
        return None

    def after_experience(self, model: Backbone, experience: Experience) -> None:
        """Freeze, merge or consolidate after training on `experience`."""

    def state_dict(self) -> dict[str, Any]:
        """Method state beyond the model's own tensors (tensors and plain values only)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what `state_dict` returned; the model is restored after this call."""


METHOD_HOOKS = ("setup", "before_experience", "trainable_parameters", "extra_loss", "before_update", "fit", "make_optimizer", "after_experience", "state_dict", "load_state_dict")


def as_method(candidate: Any, name: str) -> Method:
    """A factory's product as a `Method`: every hook it leaves out falls back to `Method`'s default.

    A plugin need not subclass `Method`: a duck-typed object gets the missing hooks from a
    subclass made for it, which forwards the hooks it has (and every other attribute) to it.
    """
    if candidate is None or isinstance(candidate, (type, str, int, float, bool, list, dict, tuple)):
        raise UserError(f"method '{name}': its factory returned {shown(candidate)}, not a method object; fix the plugin's factory")
    for hook in METHOD_HOOKS:
        if hasattr(candidate, hook) and not callable(getattr(candidate, hook)):
            raise UserError(f"method '{name}': its '{hook}' is {type(getattr(candidate, hook)).__name__}, not a callable; fix the plugin")
    if isinstance(candidate, Method):  # a subclass, or a duck type with every hook
        return candidate
    present = {hook: _forward(hook) for hook in METHOD_HOOKS if hasattr(candidate, hook)}
    completed = type(f"Completed{type(candidate).__name__}", (_Forwarding,), present)
    return completed(candidate)


def _forward(hook: str):
    def forward(self, *args, **kwargs):
        return getattr(self.wrapped, hook)(*args, **kwargs)

    forward.__name__ = hook
    return forward


class _Forwarding(Method):
    """Base of the completions `as_method` makes: attributes not defined here come from `wrapped`."""

    def __init__(self, wrapped: Any) -> None:
        self.wrapped = wrapped

    def __getattr__(self, name: str) -> Any:
        if name == "wrapped":  # not set yet (copying, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.wrapped, name)

