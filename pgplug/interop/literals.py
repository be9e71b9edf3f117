"""rl-baselines3-zoo's Python-literal strings, read as data: ``"dict(log_std_init=-2, ortho_init=False)"``.

The zoo ``eval``s such strings (``policy_kwargs``, ``normalize``, ``monitor_kwargs``). pgplug parses them
with :mod:`ast` and walks an allowlist instead, so a config can say what the zoo's configs say and
nothing more:

- numbers (also negative), strings, ``True``/``False``/``None``;
- lists, tuples, ``{...}`` literals with constant keys, and ``dict(key=value, ...)`` calls;
- names such as ``nn.ReLU``, ``th.optim.Adam`` or ``RMSpropTFLike``, each handed to a resolver the caller
  gives (the config reader's class rules, :func:`pgplug.interop.config.literal_class`); without one a name is
  refused.

Anything else (other calls, attribute access the resolver refuses, lambdas, comprehensions, operators,
subscripts, ...) is refused in one line naming the piece and what is allowed. Nothing is evaluated.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from typing import Any

from pgplug.errors import PgplugError

#: What a literal may hold, for error messages.
ALLOWED = (
    "numbers, strings, True/False/None, lists, tuples, {...} and dict(key=value, ...), "
    "and class names such as nn.ReLU, th.optim.Adam, RMSpropTFLike"
)
#: The zoo's module aliases (``import torch as th``, ``from torch import nn``), as their full module names.
MODULE_ALIASES: dict[str, str] = {"th": "torch", "nn": "torch.nn"}

#: ``resolve(dotted_name)`` returns the object a name stands for, or raises a one-line :class:`PgplugError`.
NameResolver = Callable[[str], Any]


def dotted_name(node: ast.expr) -> str | None:
    """``th.nn.ReLU`` → ``'torch.nn.ReLU'`` (module aliases expanded); None for anything but names and attributes."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(MODULE_ALIASES.get(node.id, node.id))
    return ".".join(reversed(parts))


class _Reader:
    def __init__(self, text: str, what: str, resolve: NameResolver | None) -> None:
        self.text, self.what, self.resolve = text, what, resolve

    def refuse(self, node: ast.AST, why: str = "is not allowed") -> PgplugError:
        piece = ast.get_source_segment(self.text, node) or ast.unparse(node)
        return PgplugError(f"{self.what} {self.text!r}: {' '.join(piece.split())!r} {why}; allowed: {ALLOWED}")

    def read(self, node: ast.expr) -> Any:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool, type(None))):
            return node.value
        if (
            isinstance(node, ast.UnaryOp)
            and isinstance(node.op, (ast.USub, ast.UAdd))
            and isinstance(node.operand, ast.Constant)
            and type(node.operand.value) in (int, float)
        ):
            return -node.operand.value if isinstance(node.op, ast.USub) else node.operand.value
        if isinstance(node, ast.List):
            return [self.read(item) for item in node.elts]
        if isinstance(node, ast.Tuple):
            return tuple(self.read(item) for item in node.elts)
        if isinstance(node, ast.Dict):
            return self.read_dict(node)
        if isinstance(node, ast.Call):
            return self.read_call(node)
        if isinstance(node, (ast.Name, ast.Attribute)):
            return self.read_name(node)
        raise self.refuse(node)

    def read_dict(self, node: ast.Dict) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        for key, value in zip(node.keys, node.values, strict=True):
            if key is None:
                raise self.refuse(value, "(a ** expansion) is not allowed")
            if not (isinstance(key, ast.Constant) and isinstance(key.value, (str, int, float, bool))):
                raise self.refuse(key, "is not allowed as a key (keys are constants)")
            result[key.value] = self.read(value)
        return result

    def read_call(self, node: ast.Call) -> dict[str, Any]:
        if not (isinstance(node.func, ast.Name) and node.func.id == "dict"):
            raise self.refuse(node, "is a call other than dict(...), which is not allowed")
        if node.args or any(keyword.arg is None for keyword in node.keywords):
            raise self.refuse(node, "is not allowed: dict(...) takes key=value arguments only")
        return {keyword.arg: self.read(keyword.value) for keyword in node.keywords if keyword.arg is not None}

    def read_name(self, node: ast.Name | ast.Attribute) -> Any:
        name = dotted_name(node)
        if name is None:  # an attribute of something other than a name: ``().x``, ``"a".join``
            raise self.refuse(node)
        if name in ("dict", "list", "tuple"):
            raise self.refuse(node, "is not allowed on its own (call dict(...) with key=value arguments)")
        if self.resolve is None:
            raise self.refuse(node, f"names no value: {self.what} holds data only")
        try:
            return self.resolve(name)
        except PgplugError as exc:
            raise PgplugError(f"{self.what} {self.text!r}: {exc}") from None


def read_python_literal(text: str, what: str, resolve: NameResolver | None = None) -> Any:
    """The data a zoo string such as ``"dict(net_arch=[64], activation_fn=nn.ReLU)"`` stands for, read without
    evaluating anything.

    :param text: the Python expression
    :param what: what it is, for error messages (``"policy_kwargs"``)
    :param resolve: turns a dotted name (module aliases expanded: ``nn.ReLU`` → ``torch.nn.ReLU``) into its
        object, refusing names outside its allowlist; None refuses every name
    """
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise PgplugError(f"{what} {text!r} is not a Python literal: {exc.msg}; allowed: {ALLOWED}") from None
    return _Reader(text.strip(), what, resolve).read(tree.body)
