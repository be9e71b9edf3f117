"""Open SB3 on-policy model zips, whichever library and whichever gym era saved them, without running their code.

:func:`load` reads a zip's ``data`` JSON (:mod:`pgplug.files.model_zip`), names the algorithm that
wrote it (the rule is :func:`detect_algorithm`), reads each pickled entry through the allowlist of
:mod:`pgplug.files.safe_pickle` (``gym.*`` classes become ``gymnasium.*``), rebuilds what cannot be
read that way (spaces from ``env``, schedules from the saved learning rate) and hands the result to
the algorithm's own SB3 ``load`` as ``custom_objects``, so that nothing is unpickled unchecked.
:func:`load_vecnormalize` does the same for pickled ``VecNormalize`` statistics, and
:func:`warm_start` copies one model's policy weights into another (SB3 PPO → pgplug A2C, ...).
``trust=True`` unpickles as SB3 does, for files the user vouches for. See docs/sb3-compatibility.md.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch as th
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from pgplug.contracts.registries import get_host
from pgplug.errors import PgplugError, UnknownNameError, one_line
from pgplug.files.model_zip import TRUST_HINT, ModelZip, read_zip, rebuild_objects, resolve_path
from pgplug.files.safe_pickle import UntrustedPickleError, loads

#: Algorithms from Stable-Baselines3 and sb3-contrib that :func:`load` opens, by the name ``algo`` takes
#: (rl-baselines3-zoo's names; ``sb3_a2c`` because ``a2c`` is pgplug's A2C).
SB3_ALGORITHMS = {
    "sb3_a2c": ("stable_baselines3", "A2C"),
    "ppo": ("stable_baselines3", "PPO"),
    "ppo_lstm": ("sb3_contrib", "RecurrentPPO"),
}
RECURRENT_POLICY_MODULE = "sb3_contrib.common.recurrent.policies"


# -- which algorithm wrote the zip ---------------------------------------------------------------


def algorithm_names() -> list[str]:
    """Every valid ``algo``: the registered pgplug algorithms and the SB3 / sb3-contrib ones."""
    return sorted({entry.name for entry in get_host().algorithms} | set(SB3_ALGORITHMS))


def algorithm_class(name: str) -> type[BaseAlgorithm]:
    """The class :func:`load` uses for ``algo=name``."""
    if name in SB3_ALGORITHMS:
        module, cls = SB3_ALGORITHMS[name]
        return getattr(importlib.import_module(module), cls)
    if name not in {entry.name for entry in get_host().algorithms}:
        raise UnknownNameError("algo", name, algorithm_names())
    return get_host().algorithms.get(name)


def policy_class(info: ModelZip, trust: bool = False) -> type:
    """The saved policy class, read through the allowlist (a class pickled by value only with ``trust``)."""
    blob = info.pickled("policy_class")
    assert blob is not None  # read_zip checked
    try:
        return loads(blob, trust)
    except UntrustedPickleError as exc:
        raise PgplugError(
            f"{info.path}: its entry 'policy_class' ({info.policy_name}) cannot be read safely ({exc}); {TRUST_HINT}"
        ) from exc
    except Exception as exc:
        raise PgplugError(f"{info.path}: cannot import its policy class {info.policy_name} ({one_line(exc)})") from exc


def check_actor_critic(info: ModelZip, trust: bool = False) -> type:
    """The saved policy class, if it is an ``ActorCriticPolicy`` (which covers sb3-contrib's recurrent one)."""
    policy = policy_class(info, trust)
    if not (isinstance(policy, type) and issubclass(policy, ActorCriticPolicy)):
        raise PgplugError(
            f"{info.path} holds a {info.policy_name} policy, not an SB3 ActorCriticPolicy: pgplug opens on-policy "
            f"actor-critic models ({', '.join(algorithm_names())}), not DQN/SAC/TD3-style ones"
        )
    return policy


def detect_algorithm(info: ModelZip) -> str | None:
    """Name the algorithm that saved the zip, from its ``data`` entries (None when they do not say).

    1. ``pgplug_algorithm`` (written by every pgplug algorithm's ``save``) names it.
    2. A policy from ``sb3_contrib.common.recurrent.policies`` with ``clip_range``: ``ppo_lstm``.
    3. ``clip_range`` (with ``n_epochs``): SB3's ``ppo``.
    4. ``n_steps`` and ``gae_lambda`` and no ``clip_range``: SB3's A2C, ``sb3_a2c``.
    """
    data = info.data
    if isinstance(data.get("pgplug_algorithm"), str):
        return data["pgplug_algorithm"]
    if "clip_range" in data:
        return "ppo_lstm" if info.policy_class[0] == RECURRENT_POLICY_MODULE else "ppo"
    if "n_steps" in data and "gae_lambda" in data:
        return "sb3_a2c"
    return None


def choose_algorithm(info: ModelZip, algo: str | None) -> str:
    """The ``algo`` to open ``info`` with: the detected one, or ``algo`` when it fits the file."""
    detected = detect_algorithm(info)
    if algo is None:
        if detected is None:
            raise PgplugError(
                f"cannot tell which algorithm saved {info.path} (policy {info.policy_name}); "
                f"pass algo=, one of: {', '.join(algorithm_names())}"
            )
        algorithm_class(detected)  # an unknown pgplug plugin name fails here, with the valid names
        return detected
    algorithm_class(algo)
    fits = {detected, *counterparts_of(detected)}
    if detected is not None and algo not in fits:
        raise PgplugError(
            f"{info.path} was saved by {detected}, so algo={algo!r} cannot open it; valid here: "
            f"{', '.join(sorted(fits))} (to start another algorithm from its weights, use"
            " pgplug.interop.compat.warm_start)"
        )
    return algo


# -- public entry points ------------------------------------------------------------------------


def load(
    path: str | Path,
    env: Any = None,
    algo: str | None = None,
    device: th.device | str = "auto",
    custom_objects: dict[str, Any] | None = None,
    trust: bool = False,
    **kwargs: Any,
) -> BaseAlgorithm:
    """Open any SB3-format on-policy actor-critic zip: pgplug's algorithms, SB3's A2C and PPO, RecurrentPPO.

    Returns the class that saved the file (SB3's own ``A2C``/``PPO`` for SB3 files, ``RecurrentPPO``
    for sb3-contrib's, the registered pgplug class for pgplug's), ready to predict, evaluate and,
    given ``env``, continue learning. ``algo="a2c"`` opens an SB3 A2C file as pgplug's A2C.

    :param path: the ``.zip`` (the suffix may be left out, as with SB3)
    :param env: the env to continue on; also the source of the spaces when the saved ones cannot be unpickled
    :param algo: force the algorithm (see :func:`algorithm_names`) when the file does not say
    :param device: torch device
    :param custom_objects: entries of the zip's ``data`` to replace instead of reading them (as in SB3)
    :param trust: unpickle the file's entries as SB3 does, running what they name: only for files you trust
    :param kwargs: attributes to set on the loaded model (passed to SB3's ``load``)
    """
    info = read_zip(path)
    check_actor_critic(info, trust)
    name = choose_algorithm(info, algo)
    cls = algorithm_class(name)
    objects = rebuild_objects(info, env, custom_objects, trust)
    try:
        return cls.load(info.source, env=env, device=device, custom_objects=objects, **kwargs)
    except PgplugError:
        raise
    except Exception as exc:
        raise PgplugError(f"cannot load {info.path} as {name}: {one_line(exc)}") from exc


def counterparts_of(sb3_name: str | None) -> list[str]:
    """Registered pgplug algorithms that open ``sb3_name``'s zips as their own (their ``sb3_counterpart``)."""
    if sb3_name is None:
        return []
    return [e.name for e in get_host().algorithms if getattr(e.cls, "sb3_counterpart", None) == sb3_name]


def saved_statistics(path: str | Path | None, trust: bool = False) -> Callable[[VecEnv], VecNormalize] | None:
    """For :meth:`pgplug.runtime.envs.EnvSpec.make_vec_env`: wrap an env in the ``VecNormalize`` statistics
    saved at ``path`` (None when there is no such file)."""
    if path is None or not Path(path).is_file():
        return None
    return partial(load_vecnormalize, path, trust=trust)


#: The largest VecNormalize pickle read (its statistics are a few arrays of the observation's size).
MAX_VECNORMALIZE_BYTES = 256 * 2**20


def load_vecnormalize(path: str | Path, venv: VecEnv, trust: bool = False) -> VecNormalize:
    """Load saved ``VecNormalize`` statistics around ``venv`` through the allowlist (all of pickle with ``trust``),
    including files pickled with OpenAI gym's spaces."""
    path = Path(path)
    if not path.is_file():
        raise PgplugError(f"no such VecNormalize file: {path}")
    if path.stat().st_size > MAX_VECNORMALIZE_BYTES:
        raise PgplugError(
            f"{path} holds {path.stat().st_size:,} bytes, more than VecNormalize statistics need; refused"
        )
    try:
        vec_normalize = loads(path.read_bytes(), trust)
    except UntrustedPickleError as exc:
        raise PgplugError(f"{path} cannot be read safely ({exc}); {TRUST_HINT}") from exc
    except Exception as exc:
        raise PgplugError(f"{path} is not a readable VecNormalize pickle ({one_line(exc)})") from exc
    if not isinstance(vec_normalize, VecNormalize):
        raise PgplugError(f"{path} holds a {type(vec_normalize).__name__}, not a VecNormalize")
    try:
        vec_normalize.set_venv(venv)
    except (AssertionError, ValueError) as exc:
        raise PgplugError(f"{path} does not fit the env: {one_line(exc)}") from exc
    return vec_normalize


def policy_architecture(
    source: str | Path | BaseAlgorithm, **load_kwargs: Any
) -> tuple[type[ActorCriticPolicy], dict[str, Any]]:
    """The policy class and ``policy_kwargs`` of a model (or zip), without its optimizer settings.

    Build a pgplug model with these to :func:`warm_start` it from ``source``: the optimizer is left
    to the new algorithm (RMSprop for A2C/A3C, Adam for REINFORCE).
    """
    model = source if isinstance(source, BaseAlgorithm) else load(source, device="cpu", **load_kwargs)
    kwargs = {k: v for k, v in model.policy_kwargs.items() if k not in ("optimizer_class", "optimizer_kwargs")}
    return type(model.policy), kwargs


def warm_start(model: BaseAlgorithm, source: str | Path | BaseAlgorithm, **load_kwargs: Any) -> BaseAlgorithm:
    """Copy the policy weights (actor, critic, features) of ``source`` into ``model``, in place.

    ``source`` is any model :func:`load` opens (e.g. an SB3 PPO zip) or a loaded model; ``model``
    must have the same policy architecture (see :func:`policy_architecture`). The optimizer state is
    not copied: ``model`` keeps its own optimizer, starting fresh.
    """
    label = source if not isinstance(source, BaseAlgorithm) else type(source).__name__
    source_model = source if isinstance(source, BaseAlgorithm) else load(source, device="cpu", **load_kwargs)
    if source_model.observation_space != model.observation_space or source_model.action_space != model.action_space:
        raise PgplugError(
            f"cannot warm-start from {label}: its spaces ({source_model.observation_space}, "
            f"{source_model.action_space}) differ from the model's ({model.observation_space}, {model.action_space})"
        )
    state = source_model.policy.state_dict()
    target = model.policy.state_dict()
    if state.keys() != target.keys() or any(state[k].shape != target[k].shape for k in state):
        mismatch = sorted(state.keys() ^ target.keys()) or [k for k in state if state[k].shape != target[k].shape]
        raise PgplugError(
            f"cannot warm-start from {label}: its policy architecture differs (first mismatch: {mismatch[0]!r}); "
            f"build the model with pgplug.interop.compat.policy_architecture({str(label)!r})"
        )
    with th.no_grad():
        model.policy.load_state_dict({k: v.to(target[k].device) for k, v in state.items()})
    return model


__all__ = [
    "SB3_ALGORITHMS",
    "ModelZip",
    "algorithm_class",
    "algorithm_names",
    "detect_algorithm",
    "load",
    "load_vecnormalize",
    "policy_architecture",
    "read_zip",
    "resolve_path",
    "saved_statistics",
    "warm_start",
]
