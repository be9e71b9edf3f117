"""What estimators and objectives share: their constructor arguments are their parameters."""

from __future__ import annotations

import inspect
from typing import Any


class Parametrised:
    """A plugin class whose constructor arguments, stored under their own names, are its parameters."""

    def params(self) -> dict[str, Any]:
        """The constructor arguments, for display, logging and saved configs."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {n: getattr(self, n) for n in names if hasattr(self, n)}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"
