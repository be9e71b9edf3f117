"""The one module that touches torch's private internals, each with a fallback to the public way.

Every fast path that needs a private attribute goes through a function here, so a torch upgrade that
moves one breaks one module, and the public behaviour (argument checks on, ``Module.train``,
``Optimizer.step``) is what remains.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from itertools import repeat
from typing import Any

import torch as th
from stable_baselines3.common.policies import BasePolicy
from torch.nn.modules import module as module_internals
from torch.optim import optimizer as optimizer_internals


class unchecked_distributions:
    """Turn off torch.distributions' argument validation (pure overhead on the policy's own outputs).

    A class rather than a ``@contextmanager`` generator: it is entered twice per update.
    """

    __slots__ = ("_previous",)

    def __enter__(self) -> None:
        self._previous = th.distributions.Distribution._validate_args
        th.distributions.Distribution._validate_args = False  # what set_default_validate_args(False) sets

    def __exit__(self, *exc_info: object) -> None:
        # Only ever switched back on: with threads overlapping, restoring what each saw on entry could
        # leave the checks off for good.
        if self._previous:
            th.distributions.Distribution._validate_args = True


_NOT_LISTED: Any = object()
_plain_modules: weakref.WeakKeyDictionary[th.nn.Module, list[th.nn.Module] | None] = weakref.WeakKeyDictionary()


def set_training_mode(policy: BasePolicy, mode: bool) -> None:
    """``policy.set_training_mode(mode)``, the flags set directly when no module overrides ``train()``.

    The recursive ``nn.Module.train`` (with ``Module.__setattr__`` on each module) costs ~35 µs on
    CartPole's MLP policy, and an update switches modes twice; the direct writes cost ~1 µs.
    The module list is taken once per policy (SB3 policies do not grow modules after construction).
    """
    modules = _plain_modules.get(policy, _NOT_LISTED)
    if modules is _NOT_LISTED:
        modules = list(policy.modules())
        plain = type(policy).set_training_mode is BasePolicy.set_training_mode and all(
            type(module).train is th.nn.Module.train for module in modules
        )
        modules = _plain_modules[policy] = modules if plain else None
    if modules is None:
        policy.set_training_mode(mode)
        return
    for module in modules:
        module.__dict__["training"] = mode  # what nn.Module.train assigns, without __setattr__'s checks


#: torch's global module hooks (dicts torch mutates in place, so ``any`` of the tuple sees new ones).
_GLOBAL_MODULE_HOOKS = tuple(
    getattr(module_internals, name, None) for name in ("_global_forward_hooks", "_global_forward_pre_hooks")
)
#: torch's global optimizer step hooks, likewise.
_GLOBAL_OPTIMIZER_HOOKS = tuple(
    getattr(optimizer_internals, name, None) for name in ("_global_optimizer_pre_hooks", "_global_optimizer_post_hooks")
)
#: torch's global module hooks of every kind, backward ones included (what ``Module._call_impl`` checks).
_GLOBAL_CALL_HOOKS = (
    *_GLOBAL_MODULE_HOOKS,
    *(getattr(module_internals, name, None) for name in ("_global_backward_hooks", "_global_backward_pre_hooks")),
)
#: Where torch keeps the global hooks elsewhere than this module knows: assume there are some.
_UNKNOWN_MODULE_HOOKS = None in _GLOBAL_MODULE_HOOKS
_UNKNOWN_CALL_HOOKS = None in _GLOBAL_CALL_HOOKS
_UNKNOWN_OPTIMIZER_HOOKS = None in _GLOBAL_OPTIMIZER_HOOKS


def has_forward_hooks(module: th.nn.Module) -> bool:
    """Whether calling ``module`` would run hooks that a fast path calling its parts directly would skip.

    Counts the module's own hooks and torch's global module hooks; where torch keeps them elsewhere than
    this module knows, it answers True, and the caller runs the module as it is.
    """
    try:
        attributes = vars(module)
        if attributes["_forward_hooks"] or attributes["_forward_pre_hooks"]:
            return True
    except (KeyError, TypeError):
        return True
    return _UNKNOWN_MODULE_HOOKS or any(_GLOBAL_MODULE_HOOKS)


#: A module's own hooks that ``Module._call_impl`` runs, as keys of the module's ``__dict__``.
_CALL_HOOK_KEYS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


class ModuleCalls:
    """Whether calling each of a fixed list of modules would run its ``forward`` and nothing else.

    torch's own condition for skipping hooks in ``Module._call_impl`` (no forward or backward hooks of
    the modules' own or global ones), plus: not compiled in place, ``forward`` not replaced on the
    instance. Then a fast path may run the forwards' ops itself. The modules' hook dicts and attribute
    dicts are taken once (torch adds and removes hooks in place) and read at every :meth:`forward_only`,
    in C-level passes: this runs at every step, and an attribute read on an ``nn.Module`` goes through
    its ``__getattr__`` hook. Where torch keeps these elsewhere, the answer is always False.
    """

    __slots__ = ("_attributes", "_hooks")

    def __init__(self, modules: Iterable[th.nn.Module]) -> None:
        try:
            self._attributes: list[dict[str, Any]] | None = [vars(module) for module in modules]
            self._hooks = [attributes[key] for attributes in self._attributes for key in _CALL_HOOK_KEYS]
        except (KeyError, TypeError):
            self._attributes, self._hooks = None, []

    def forward_only(self) -> bool:
        attributes = self._attributes
        if attributes is None or _UNKNOWN_CALL_HOOKS or any(_GLOBAL_CALL_HOOKS) or any(self._hooks):
            return False
        return not (
            any(map(dict.__contains__, attributes, repeat("forward")))
            or any(map(dict.get, attributes, repeat("_compiled_call_impl")))
        )


def child_modules(module: th.nn.Module) -> dict[str, th.nn.Module | None]:
    """``module``'s direct submodules by attribute name, read without ``nn.Module.__getattr__``'s lookups."""
    try:
        return vars(module)["_modules"]
    except (KeyError, TypeError):
        return dict(module.named_children())


def linear_parameters(linear: th.nn.Linear) -> tuple[th.Tensor, th.Tensor | None]:
    """A ``Linear``'s weight and bias, read without ``nn.Module.__getattr__``'s lookups."""
    try:
        parameters = vars(linear)["_parameters"]
        return parameters["weight"], parameters["bias"]
    except (KeyError, TypeError):
        return linear.weight, linear.bias


def tensor_versions(tensors: list[th.Tensor]) -> list[int] | None:
    """The tensors' in-place version counters (each bumped by an in-place update), None where torch has none."""
    try:
        return [t._version for t in tensors]
    except AttributeError:
        return None


def has_step_hooks(optimizer: th.optim.Optimizer) -> bool:
    """Whether ``optimizer.step()`` would run hooks (its own or global ones) that a functional update would skip."""
    try:
        if optimizer._optimizer_step_pre_hooks or optimizer._optimizer_step_post_hooks:
            return True
    except AttributeError:
        return True
    return _UNKNOWN_OPTIMIZER_HOOKS or any(_GLOBAL_OPTIMIZER_HOOKS)


def foreach_norms(tensors: list[th.Tensor]) -> list[th.Tensor]:
    """The 2-norm of each tensor, in one multi-tensor kernel where torch has it."""
    foreach_norm = getattr(th, "_foreach_norm", None)
    if foreach_norm is None:
        return [th.linalg.vector_norm(t, 2.0) for t in tensors]
    return list(foreach_norm(tensors, 2.0))


def foreach_scale_(tensors: list[th.Tensor], factor: th.Tensor) -> None:
    """Multiply each tensor in place by ``factor``, in one multi-tensor kernel where torch has it."""
    foreach_mul_ = getattr(th, "_foreach_mul_", None)
    if foreach_mul_ is None:
        for t in tensors:
            t.mul_(factor)
    else:
        foreach_mul_(tensors, factor)


def foreach_copy_(targets: list[th.Tensor], sources: list[th.Tensor]) -> None:
    """Copy each source into its target, in one multi-tensor kernel where torch has it."""
    foreach_copy = getattr(th, "_foreach_copy_", None)
    if foreach_copy is None:
        for target, source in zip(targets, sources):
            target.copy_(source)
    else:
        foreach_copy(targets, sources)


def foreach_increment_(counters: list[th.Tensor]) -> None:
    """Add one to each counter tensor (an optimizer's ``step`` states) as torch's multi-tensor optimizers do on the
    CPU: one kernel with the 1 given as a tensor."""
    foreach_add_ = getattr(th, "_foreach_add_", None)
    if foreach_add_ is None:
        for counter in counters:
            counter.add_(1)
    else:
        foreach_add_(counters, th.tensor(1.0), alpha=1.0)


def foreach_addcdiv_(
    tensors: list[th.Tensor], numerators: list[th.Tensor], denominators: list[th.Tensor], value: float
):
    """``tensor += value * numerator / denominator`` for each triple, in one multi-tensor kernel where torch has it."""
    foreach_addcdiv = getattr(th, "_foreach_addcdiv_", None)
    if foreach_addcdiv is None:
        for tensor, numerator, denominator in zip(tensors, numerators, denominators):
            tensor.addcdiv_(numerator, denominator, value=value)
    else:
        foreach_addcdiv(tensors, numerators, denominators, value=value)
