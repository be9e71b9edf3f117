"""The seam: which runner runs a policy, and the one switch that turns every speed path off.

``PGPLUG_FAST_PATHS=0`` (or ``fast_paths=False`` on an algorithm, ``--no-fast-paths`` on the command
line) makes every algorithm run SB3's own code: ``policy.forward`` in the rollout, ``evaluate_actions``
in the update, ``Optimizer.step``, ``clip_grad_norm_``, ``policy.predict`` and SB3's ``DummyVecEnv``. This
module is the only one that chooses a fast runner or vec env (an import-linter contract says so).
"""

from __future__ import annotations

import os

from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

from pgplug.errors import PgplugError
from pgplug.runtime.fast_runners import (
    Bf16Runner,
    FastRecurrentRunner,
    FastRunner,
    LeanDummyVecEnv,
    runs_sb3_actor_critic,
)
from pgplug.runtime.policy_runner import PolicyRunner
from pgplug.runtime.recurrent import RecurrentRunner, is_recurrent
from pgplug.validation import check_precision

FAST_PATHS_ENV_VAR = "PGPLUG_FAST_PATHS"
_ON, _OFF = ("1", "true", "on", "yes"), ("0", "false", "off", "no")


def fast_paths_from_env() -> bool:
    """``PGPLUG_FAST_PATHS``: unset or 1/true/on/yes turns the speed paths on, 0/false/off/no turns them off."""
    value = os.environ.get(FAST_PATHS_ENV_VAR, "").strip().lower()
    if value in ("", *_ON):
        return True
    if value in _OFF:
        return False
    raise PgplugError(f"{FAST_PATHS_ENV_VAR}={value!r} is neither on ({', '.join(_ON)}) nor off ({', '.join(_OFF)})")


def resolve_fast_paths(fast_paths: bool | None) -> bool:
    """An algorithm's ``fast_paths`` setting: True or False as given, None for ``PGPLUG_FAST_PATHS``'s."""
    if fast_paths is None:
        return fast_paths_from_env()
    if not isinstance(fast_paths, bool):
        raise PgplugError(f"fast_paths must be True, False or None (PGPLUG_FAST_PATHS decides), got {fast_paths!r}")
    return fast_paths


def check_precision_runs(precision: str, *, fast: bool) -> str:
    """``precision`` if this process can train in it: ``bf16`` is a speed path, so it needs the speed paths on.

    With them off (``fast_paths=False``, ``PGPLUG_FAST_PATHS=0``, ``--no-fast-paths``) pgplug runs SB3's own
    float32 code: training in ``bf16`` is refused in one line rather than silently run in float32.
    """
    check_precision("precision", precision)
    if precision != "fp32" and not fast:
        raise PgplugError(
            f"precision={precision!r} is one of pgplug's speed paths, which are off ({FAST_PATHS_ENV_VAR}=0, "
            "fast_paths=False or --no-fast-paths run SB3's own float32 code): use precision='fp32' or turn them on"
        )
    return precision


def runner_for(
    policy: ActorCriticPolicy, *, fast: bool, keep_graph: bool = False, precision: str = "fp32"
) -> PolicyRunner:
    """The runner for ``policy``: the reference (SB3's code) or the fast one, feed-forward or recurrent.

    :param fast: take the speed paths (each engages only where it is proven equal to SB3's code)
    :param keep_graph: the caller updates once per rollout, on the weights that collected it: the update
        may differentiate the rollout's own forward passes (fast runner, CNN policies)
    :param precision: ``fp32``, or ``bf16`` for the policy's body under bfloat16 autocast
        (:class:`~pgplug.runtime.fast_runners.Bf16Runner`; needs ``fast`` and SB3's own feed-forward policy code)
    """
    if check_precision_runs(precision, fast=fast) == "bf16":
        if is_recurrent(policy) or not runs_sb3_actor_critic(policy):
            raise PgplugError(
                f"precision='bf16' runs SB3's own ActorCriticPolicy forward passes (MlpPolicy, CnnPolicy, "
                f"MultiInputPolicy); {type(policy).__name__} is recurrent or has its own: use precision='fp32'"
            )
        return Bf16Runner(policy)
    if is_recurrent(policy):
        return FastRecurrentRunner(policy) if fast else RecurrentRunner(policy)
    return FastRunner(policy, keep_graph=keep_graph) if fast else PolicyRunner(policy)


#: The vec envs an env spec's ``vec_env`` names: envs stepped in this process, one subprocess each, or (Atari ids
#: only) ale-py's ``AtariVectorEnv`` stepping every emulator in C++ threads (:mod:`pgplug.runtime.ale_vector`).
VEC_ENV_KINDS = ("dummy", "subproc", "ale")
_CLASS_KINDS = ("dummy", "subproc")


def vec_env_class(kind: str, *, fast: bool | None = None) -> type[VecEnv]:
    """The class that steps ``kind``'s envs: SB3's, or for ``dummy`` with the speed paths on, ``LeanDummyVecEnv``.

    :param fast: take the speed paths; None for ``PGPLUG_FAST_PATHS``'s setting (``--no-fast-paths`` sets it)
    """
    if kind not in VEC_ENV_KINDS:
        raise PgplugError(f"unknown vec_env {kind!r}; valid: {', '.join(VEC_ENV_KINDS)}")
    if kind not in _CLASS_KINDS:
        raise PgplugError(
            f"vec_env {kind} steps no gymnasium envs (EnvSpec builds it); valid: {', '.join(_CLASS_KINDS)}"
        )
    if kind == "subproc":
        return SubprocVecEnv
    return LeanDummyVecEnv if resolve_fast_paths(fast) else DummyVecEnv
