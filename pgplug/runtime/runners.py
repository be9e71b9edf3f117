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
from pgplug.runtime.fast_runners import FastRecurrentRunner, FastRunner, LeanDummyVecEnv
from pgplug.runtime.policy_runner import PolicyRunner
from pgplug.runtime.recurrent import RecurrentRunner, is_recurrent

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


def runner_for(policy: ActorCriticPolicy, *, fast: bool, keep_graph: bool = False) -> PolicyRunner:
    """The runner for ``policy``: the reference (SB3's code) or the fast one, feed-forward or recurrent.

    :param fast: take the speed paths (each engages only where it is proven equal to SB3's code)
    :param keep_graph: the caller updates once per rollout, on the weights that collected it: the update
        may differentiate the rollout's own forward passes (fast runner, CNN policies)
    """
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
