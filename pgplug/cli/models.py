"""Opening saved models for the CLI: any zip :func:`pgplug.load` opens, checked against the env it will play."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
from stable_baselines3.common.utils import ConstantSchedule

from pgplug.errors import PgplugError
from pgplug.files.safe_pickle import loads
from pgplug.interop import compat


def saved_algorithm(path: Path, trust: bool = False) -> str | None:
    """The algorithm that saved a model zip (read without unpickling); a broken or off-policy file fails here."""
    info = compat.read_zip(path)
    compat.check_actor_critic(info, trust)
    return compat.detect_algorithm(info)


def spaces_readable(info: compat.ModelZip, trust: bool) -> bool:
    """Whether the zip's pickled spaces can be read (gym-era ones can, through the gym → gymnasium mapping)."""
    for key in ("observation_space", "action_space"):
        blob = info.pickled(key)
        if blob is None:
            continue
        try:
            loads(blob, trust)
        except Exception:
            return False
    return True


def playing_objects() -> dict[str, Any]:
    """What rl_zoo3's ``enjoy`` replaces when it loads a model only to play it: the learning rate and the clip range.

    A schedule is then never called (a zoo model trained past its ``n_timesteps`` ends with a negative rate that
    torch's optimizers refuse) nor rebuilt from a pickle pgplug does not open (a zoo ``linear_schedule``).
    """
    return {"learning_rate": 0.0, "lr_schedule": ConstantSchedule(0.0), "clip_range": ConstantSchedule(0.0)}


def open_model(
    path: str | Path,
    algo: str | None = None,
    device: str = "auto",
    make_env: Callable[[], Any] | None = None,
    trust: bool = False,
) -> tuple[Any, str]:
    """Load any zip :func:`pgplug.load` opens, to play it (its learning rate and clip range are
    :func:`playing_objects`); the algorithm's name too (the detected one, or ``algo``).

    :param make_env: builds the env whose spaces replace saved spaces that cannot be read
    :param trust: unpickle as SB3 does (``--trust-file``)
    """
    info = compat.read_zip(path)
    compat.check_actor_critic(info, trust)
    name = compat.choose_algorithm(info, algo)
    env = make_env() if make_env is not None and not spaces_readable(info, trust) else None
    model = compat.load(info.path, env=env, algo=algo, device=device, custom_objects=playing_objects(), trust=trust)
    return model, name


def describe_space(space: gym.Space) -> str:
    """A space on one short line: ``Box(12,) float32`` (a Box's repr prints its bounds over many lines)."""
    if isinstance(space, gym.spaces.Box):
        return f"Box{space.shape} {space.dtype}"
    return " ".join(str(space).split())


def load_expert(path: str | Path, env: Any, trust: bool = False) -> tuple[Any, str]:
    """Open the expert (on the CPU) and check that it plays ``env``'s observations and actions."""
    expert, algo = open_model(path, device="cpu", make_env=lambda: env, trust=trust)
    if expert.observation_space != env.observation_space or expert.action_space != env.action_space:
        raise PgplugError(
            f"the expert {path} ({algo}) plays observations {describe_space(expert.observation_space)} and actions "
            f"{describe_space(expert.action_space)}, but the student's env gives "
            f"{describe_space(env.observation_space)} and {describe_space(env.action_space)}: "
            "use the expert's env id, frame_stack and normalize"
        )
    return expert, algo
