"""The process's random generators as plain JSON, so a saved model continues the random draws it left off.

SB3's ``set_random_seed`` seeds three generators: python's ``random``, numpy's global one and torch's CPU
one (actions are sampled from torch's). SB3's ``save`` keeps none of them and its ``load`` seeds them
afresh, so a model trained on from a file draws other actions than the same model trained on in memory.
pgplug's ``save`` records their states (:func:`capture`) in the zip's ``data`` as JSON, not a pickle, and
``load`` puts them back (:func:`restore`) once the model is built. CUDA generators are not recorded.
"""

from __future__ import annotations

import base64
import binascii
import random
from typing import Any

import numpy as np
import torch as th

from pgplug.errors import PgplugError

#: The ``data`` entry of a saved model that holds the generator states.
KEY = "random_state"


def _encode(array: np.ndarray) -> str:
    return base64.b64encode(array.tobytes()).decode("ascii")


def _decode(text: str, dtype: type) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text.encode("ascii"), validate=True), dtype=dtype).copy()


def capture() -> dict[str, Any]:
    """The states of python's, numpy's (global) and torch's (CPU) generators, as JSON data."""
    version, words, gauss = random.getstate()
    numpy_state = np.random.get_state(legacy=False)
    return {
        "python": {"version": version, "words": _encode(np.asarray(words, dtype=np.uint32)), "gauss": gauss},
        "numpy": {
            "key": _encode(numpy_state["state"]["key"]),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "torch": _encode(th.get_rng_state().numpy()),
    }


def restore(state: dict[str, Any], source: object = "the model file") -> None:
    """Set the three generators to a state :func:`capture` returned; a malformed one fails in one line."""
    try:
        python, numpy_state = state["python"], state["numpy"]
        words = tuple(int(word) for word in _decode(python["words"], np.uint32))
        key = _decode(numpy_state["key"], np.uint32)
        torch_state = th.from_numpy(_decode(state["torch"], np.uint8))
        random.setstate((python["version"], words, python["gauss"]))
        np.random.set_state(("MT19937", key, numpy_state["pos"], numpy_state["has_gauss"], numpy_state["gauss"]))
        th.set_rng_state(torch_state)
    except (KeyError, TypeError, ValueError, binascii.Error, RuntimeError) as exc:
        raise PgplugError(f"{source}: its {KEY!r} entry is not a saved random state ({exc})") from exc
