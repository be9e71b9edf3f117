"""Open SB3 on-policy model zips, whichever library and whichever gym era saved them.

:func:`load` reads a zip's ``data`` JSON without unpickling anything, names the algorithm that wrote
it (the rule is :func:`detect_algorithm`), unpickles each pickled entry itself with
:class:`GymCompatUnpickler` (``gym.*`` classes become ``gymnasium.*``), rebuilds what cannot be
unpickled (spaces from ``env``, schedules from the saved learning rate) and hands the result to
the algorithm's own SB3 ``load`` as ``custom_objects``. :func:`load_vecnormalize` does the same
for pickled ``VecNormalize`` statistics, and :func:`warm_start` copies one model's policy weights
into another (SB3 PPO → pgplug A2C, ...). See docs/sb3-compatibility.md.

Loading runs pickles, as SB3 does: open only files you trust.
"""

from __future__ import annotations

import base64
import binascii
import importlib
import io
import json
import pickle
import pickletools
import re
import warnings
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch as th
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.utils import FloatSchedule
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from pgplug.contracts.registries import get_host
from pgplug.errors import PgplugError, UnknownNameError, one_line

#: Algorithms from Stable-Baselines3 and sb3-contrib that :func:`load` opens, by the name ``algo`` takes
#: (rl-baselines3-zoo's names; ``sb3_a2c`` because ``a2c`` is pgplug's A2C).
SB3_ALGORITHMS = {
    "sb3_a2c": ("stable_baselines3", "A2C"),
    "ppo": ("stable_baselines3", "PPO"),
    "ppo_lstm": ("sb3_contrib", "RecurrentPPO"),
}
RECURRENT_POLICY_MODULE = "sb3_contrib.common.recurrent.policies"
DEFAULT_CLIP_RANGE = 0.2  # PPO's default, for a clip_range schedule that cannot be unpickled


# -- unpickling ---------------------------------------------------------------------------------


class GymCompatUnpickler(pickle.Unpickler):
    """A pickle loader that reads classes of OpenAI ``gym`` as their ``gymnasium`` twins.

    ``gym.spaces.box.Box`` → ``gymnasium.spaces.box.Box`` and so on; gymnasium's spaces restore the
    legacy gym state (``shape``, ``np_random``, no ``start``) themselves.
    """

    def find_class(self, module: str, name: str) -> Any:
        if module == "gym" or module.startswith("gym."):
            try:
                return super().find_class("gymnasium" + module[len("gym") :], name)
            except (ImportError, AttributeError):
                pass
        return super().find_class(module, name)


def compat_loads(blob: bytes) -> Any:
    """Unpickle ``blob`` (pickle or cloudpickle bytes) with the gym → gymnasium mapping."""
    return GymCompatUnpickler(io.BytesIO(blob)).load()


def pickled_globals(blob: bytes) -> list[tuple[str, str]]:
    """The ``(module, name)`` of every class or function a pickle refers to, read from its opcodes (nothing runs)."""
    found: list[tuple[str, str]] = []
    strings: list[str] = []
    memo: dict[int, Any] = {}
    last: Any = None
    for opcode, arg, _ in pickletools.genops(blob):
        if opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"):
            strings.append(arg)
            last = arg
        elif opcode.name == "MEMOIZE":
            memo[len(memo)] = last
        elif opcode.name in ("BINGET", "LONG_BINGET", "GET") and isinstance(memo.get(arg), str):
            strings.append(memo[arg])
            last = memo[arg]
        elif opcode.name == "GLOBAL":
            module, _, name = str(arg).partition(" ")
            found.append((module, name))
            last = None
        elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
            found.append((strings[-2], strings[-1]))
            last = None
        else:
            last = None
    return found


# -- reading a zip without unpickling -----------------------------------------------------------


@dataclass
class ModelZip:
    """What an SB3 zip says about itself, read without unpickling anything.

    :param path: the file
    :param data: the raw ``data`` JSON (pickled entries still base64 ``:serialized:`` blobs)
    :param members: the archive's file names
    :param policy_class: ``(module, name)`` of the saved policy class
    """

    path: Path
    data: dict[str, Any]
    members: list[str]
    policy_class: tuple[str, str]

    def pickled(self, key: str) -> bytes | None:
        """The pickle bytes of entry ``key``, or None when it is stored as plain JSON."""
        item = self.data.get(key)
        if not (isinstance(item, dict) and ":serialized:" in item):
            return None
        try:
            return base64.b64decode(item[":serialized:"].encode(), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise PgplugError(f"{self.path}: corrupt entry {key!r} in 'data' (bad base64)") from exc

    def pickled_type(self, key: str) -> str:
        """The type name SB3 wrote next to a pickled entry, e.g. ``gym.spaces.box.Box``."""
        item = self.data.get(key)
        text = item.get(":type:", "") if isinstance(item, dict) else ""
        match = re.fullmatch(r"<class '(.+)'>", text)
        return match.group(1) if match else text

    @property
    def policy_name(self) -> str:
        return ".".join(self.policy_class)


def resolve_path(path: str | Path) -> Path:
    """``path``, or ``path.zip`` when only that exists (SB3 accepts both)."""
    path = Path(path)
    if not path.exists() and path.suffix != ".zip" and Path(f"{path}.zip").exists():
        path = Path(f"{path}.zip")
    if not path.exists():
        raise PgplugError(f"no such model file: {path}")
    if not path.is_file():
        raise PgplugError(f"{path} is a directory, not a model zip")
    return path


def read_zip(path: str | Path) -> ModelZip:
    """Open ``path`` and read its ``data`` JSON; fail in one line when the file is not a sound SB3 zip."""
    path = resolve_path(path)
    with path.open("rb") as file:
        head = file.read(4)
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.namelist()
            bad_member = archive.testzip()
            if bad_member is not None:
                raise PgplugError(f"{path} is corrupt: archive member {bad_member!r} fails its CRC check")
            if "data" not in members:
                raise PgplugError(f"{path} has no 'data' entry: not a Stable-Baselines3 model zip")
            raw = archive.read("data")
    except PgplugError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error, NotImplementedError, ValueError) as exc:
        if head.startswith(b"PK"):
            raise PgplugError(f"{path} is a truncated or corrupt zip archive ({one_line(exc)})") from exc
        raise PgplugError(f"{path} is not a zip archive, so not an SB3/pgplug model file") from exc
    try:
        data = json.loads(raw.decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PgplugError(f"{path} is corrupt: its 'data' entry is not valid JSON ({one_line(exc)})") from exc
    if not isinstance(data, dict):
        raise PgplugError(f"{path} is corrupt: its 'data' entry is not a JSON object")
    if "policy.pth" not in members:
        raise PgplugError(f"{path} has no policy weights ('policy.pth'): not an on-policy SB3 model zip")
    info = ModelZip(path, data, members, ("", ""))
    info.policy_class = _policy_class_name(info)
    return info


def _policy_class_name(info: ModelZip) -> tuple[str, str]:
    blob = info.pickled("policy_class")
    if blob is None:
        raise PgplugError(f"{info.path} has no pickled 'policy_class' in its 'data': not an SB3 model zip")
    try:
        references = pickled_globals(blob)
    except Exception as exc:
        raise PgplugError(f"{info.path} is corrupt: its 'policy_class' pickle is unreadable ({one_line(exc)})") from exc
    if references and not references[0][0].startswith("cloudpickle"):
        return references[0]
    # Pickled by value (a class defined in a script): SB3 wrote its module next to the blob.
    return (str(info.data["policy_class"].get("__module__", "")), "<class defined in a script>")


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


def _policy_class(info: ModelZip) -> type:
    module, name = info.policy_class
    try:
        if name.startswith("<"):
            blob = info.pickled("policy_class")
            assert blob is not None
            return compat_loads(blob)
        return getattr(importlib.import_module(module), name)
    except Exception as exc:
        raise PgplugError(f"{info.path}: cannot import its policy class {info.policy_name} ({one_line(exc)})") from exc


def check_actor_critic(info: ModelZip) -> type:
    """The saved policy class, if it is an ``ActorCriticPolicy`` (which covers sb3-contrib's recurrent one)."""
    policy = _policy_class(info)
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


# -- rebuilding what cannot be unpickled ----------------------------------------------------------


def saved_learning_rate(info: ModelZip) -> float | None:
    """The zip's learning rate: the saved constant, else a schedule's start value SB3 wrote beside its
    pickle (e.g. ``initial_value``), else the last rate the saved optimizer used."""
    learning_rate = info.data.get("learning_rate")
    if isinstance(learning_rate, (int, float)) and not isinstance(learning_rate, bool):
        return float(learning_rate)
    for key in ("learning_rate", "lr_schedule"):
        value = _number_in_entry(info, key)
        if value is not None:
            return value
    if "policy.optimizer.pth" not in info.members:
        return None
    try:
        with zipfile.ZipFile(info.path) as archive, archive.open("policy.optimizer.pth") as file:
            state = th.load(io.BytesIO(file.read()), map_location="cpu", weights_only=True)
        return float(state["param_groups"][0]["lr"])
    except Exception:
        return None


def _number_in_entry(info: ModelZip, key: str) -> float | None:
    """A number SB3 wrote next to a pickled schedule (its first-level attributes), e.g. ``initial_value``."""
    item = info.data.get(key)
    if not isinstance(item, dict):
        return None
    for name, value in item.items():
        if name.startswith(":"):
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        match = re.search(r"val(?:ue)?=([-+0-9.eE]+)", str(value))
        if match:
            return float(match.group(1))
    return None


def _env_spaces(env: Any) -> tuple[gym.Space, gym.Space]:
    """The spaces SB3 would see for ``env`` (after its own wrapping, e.g. channels-first images)."""
    from stable_baselines3.common.base_class import maybe_make_env

    wrapped = BaseAlgorithm._wrap_env(maybe_make_env(env, 0), verbose=0, monitor_wrapper=False)
    return wrapped.observation_space, wrapped.action_space


def rebuild_objects(info: ModelZip, env: Any = None, custom_objects: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every pickled entry of the zip, unpickled with the gym shim or rebuilt; ``custom_objects`` win.

    Given to SB3's ``load`` as its ``custom_objects``, so SB3 unpickles nothing itself.
    """
    objects = dict(custom_objects or {})
    learning_rate = None
    spaces = None
    for key in info.data:
        blob = info.pickled(key)
        if key in objects or blob is None:
            continue
        try:
            objects[key] = compat_loads(blob)
            continue
        except Exception as exc:
            reason = one_line(exc)
        saved_type = info.pickled_type(key)
        if key in ("observation_space", "action_space"):
            if env is None:
                raise PgplugError(
                    f"{info.path}: cannot rebuild its {key} ({saved_type}: {reason}); pass env= to take it from the env"
                )
            spaces = spaces or _env_spaces(env)
            objects[key] = spaces[0] if key == "observation_space" else spaces[1]
        elif key in ("learning_rate", "lr_schedule"):
            learning_rate = learning_rate if learning_rate is not None else saved_learning_rate(info)
            if learning_rate is None:
                raise PgplugError(
                    f"{info.path}: cannot rebuild its {key} ({saved_type}: {reason}) and it saved no learning rate; "
                    f"pass custom_objects={{'{key}': ...}}"
                )
            objects[key] = learning_rate if key == "learning_rate" else FloatSchedule(learning_rate)
            _warn(info, key, saved_type, reason, f"the constant {learning_rate:g}")
        elif key in ("clip_range", "clip_range_vf"):
            value = _number_in_entry(info, key)
            value = value if value is not None else (DEFAULT_CLIP_RANGE if key == "clip_range" else None)
            objects[key] = value
            _warn(info, key, saved_type, reason, "None" if value is None else f"the constant {value:g}")
        elif key in ("policy_class", "policy_kwargs"):
            raise PgplugError(f"{info.path}: cannot unpickle its {key} ({reason}); the policy cannot be rebuilt")
        else:
            objects[key] = None
            _warn(info, key, saved_type, reason, "None")
    return objects


def _warn(info: ModelZip, key: str, saved_type: str, reason: str, replacement: str) -> None:
    warnings.warn(
        f"{info.path}: {key} ({saved_type}) cannot be unpickled ({reason}); using {replacement}", stacklevel=3
    )


# -- public entry points ------------------------------------------------------------------------


def load(
    path: str | Path,
    env: Any = None,
    algo: str | None = None,
    device: th.device | str = "auto",
    custom_objects: dict[str, Any] | None = None,
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
    :param custom_objects: entries of the zip's ``data`` to replace instead of unpickling them (as in SB3)
    :param kwargs: attributes to set on the loaded model (passed to SB3's ``load``)
    """
    info = read_zip(path)
    check_actor_critic(info)
    name = choose_algorithm(info, algo)
    cls = algorithm_class(name)
    objects = rebuild_objects(info, env, custom_objects)
    try:
        return cls.load(info.path, env=env, device=device, custom_objects=objects, **kwargs)
    except PgplugError:
        raise
    except Exception as exc:
        raise PgplugError(f"cannot load {info.path} as {name}: {one_line(exc)}") from exc


def counterparts_of(sb3_name: str | None) -> list[str]:
    """Registered pgplug algorithms that open ``sb3_name``'s zips as their own (their ``sb3_counterpart``)."""
    if sb3_name is None:
        return []
    return [e.name for e in get_host().algorithms if getattr(e.cls, "sb3_counterpart", None) == sb3_name]


def saved_statistics(path: str | Path | None) -> Callable[[VecEnv], VecNormalize] | None:
    """For :meth:`pgplug.runtime.envs.EnvSpec.make_vec_env`: wrap an env in the ``VecNormalize`` statistics
    saved at ``path`` (None when there is no such file)."""
    if path is None or not Path(path).is_file():
        return None
    return partial(load_vecnormalize, path)


def load_vecnormalize(path: str | Path, venv: VecEnv) -> VecNormalize:
    """Load saved ``VecNormalize`` statistics around ``venv``, including files pickled with OpenAI gym's spaces."""
    path = Path(path)
    if not path.is_file():
        raise PgplugError(f"no such VecNormalize file: {path}")
    try:
        with path.open("rb") as file:
            vec_normalize = GymCompatUnpickler(file).load()
    except Exception as exc:
        raise PgplugError(f"{path} is not a readable VecNormalize pickle ({one_line(exc)})") from exc
    if not isinstance(vec_normalize, VecNormalize):
        raise PgplugError(f"{path} holds a {type(vec_normalize).__name__}, not a VecNormalize")
    try:
        vec_normalize.set_venv(venv)
    except (AssertionError, ValueError) as exc:
        raise PgplugError(f"{path} does not fit the env: {one_line(exc)}") from exc
    return vec_normalize


def policy_architecture(source: str | Path | BaseAlgorithm) -> tuple[type[ActorCriticPolicy], dict[str, Any]]:
    """The policy class and ``policy_kwargs`` of a model (or zip), without its optimizer settings.

    Build a pgplug model with these to :func:`warm_start` it from ``source``: the optimizer is left
    to the new algorithm (RMSprop for A2C/A3C, Adam for REINFORCE).
    """
    model = source if isinstance(source, BaseAlgorithm) else load(source, device="cpu")
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
    "GymCompatUnpickler",
    "ModelZip",
    "algorithm_class",
    "algorithm_names",
    "compat_loads",
    "detect_algorithm",
    "load",
    "load_vecnormalize",
    "policy_architecture",
    "read_zip",
    "saved_statistics",
    "warm_start",
]
