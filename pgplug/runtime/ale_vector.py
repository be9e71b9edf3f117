"""SB3's Atari pipeline on ale-py's own vector env: emulators stepped in C++ threads, one ``VecEnv`` for all.

``vec_env: ale`` builds one :class:`ale_py.vector_env.AtariVectorEnv` where SB3 builds ``n_envs`` gymnasium envs,
each under ``Monitor`` and ``AtariWrapper``, then ``VecFrameStack``. ale-py does the frame skip with max-pool, the
no-op starts, FIRE on reset, the 84×84 grey frames and the frame stack in its threads; :class:`AleVecEnv` adds
what SB3's users rely on and ale-py does differently:

- **episodic life as SB3's** ``EpisodicLifeEnv``: a lost life ends the agent's episode (``done``), the game goes
  on, and the frame stack restarts from zeros, as ``VecFrameStack`` restarts it at every ``done`` (ale-py's own
  ``episodic_life`` resets the whole game at a lost life instead, so it is off and ``life_loss_info`` signals);
- **Monitor's episode info** at the end of the game (not of a life): ``info["episode"]`` holds the raw, unclipped
  score of the whole game, its length in emulator frames and the time since the env was built, and
  ``monitor_dir`` gets SB3's ``monitor.csv`` files; rewards are clipped here (``np.sign``), after the bookkeeping;
- **SB3's VecEnv contract**: a game over resets in the same step (``SameStep``), with the last observation in
  ``info["terminal_observation"]`` and ``info["TimeLimit.truncated"]``; ``seed()`` seeds env ``i`` with
  ``seed + i`` at the next reset, as ``make_vec_env`` does.

What differs from SB3's pipeline, by design of ale-py: the grey conversion and resize are ale-py's (the frames
agree to a few grey levels, see ``tests/test_ale_vector.py``); after a lost life SB3 takes a hidden no-op and FIRE
before the agent's next step, here the agent's own next step follows (in games without lives, Pong among them,
there is no difference). ``step_async`` sends the actions to the emulator threads and ``step_wait`` collects
them, so whatever runs in between overlaps the emulators.

The envs may be split into groups of consecutive envs, one ``AtariVectorEnv`` each (``groups``; one by default,
``DEFAULT_GROUPS``), that also step one group at a time (``send_group``/``recv_group``,
:class:`~pgplug.contracts.vec_env.GroupSteppedVecEnv`): pgplug's collector acts for one group while the other's
emulators step. Env ``i`` is the same emulator, seeded alike, whatever the grouping
(``tests/test_collect_in_groups.py``).
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.atari_wrappers import AtariWrapper
from stable_baselines3.common.monitor import Monitor, ResultsWriter
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

from pgplug.errors import PgplugError

#: ``AtariWrapper``'s keyword arguments and the ``AtariVectorEnv`` option each becomes (None: done here).
WRAPPER_OPTIONS = {
    "noop_max": "noop_max",
    "frame_skip": "frameskip",
    "screen_size": None,
    "terminal_on_life_loss": None,
    "clip_reward": None,
}
#: The groups ``vec_env: ale`` splits its envs into. One: on the 2-core AMD EPYC (AVX2) machine of 2026-12-02,
#: A2C on Pong (fp32, 16 envs) ran 0.88 times as fast in two groups (``benchmarks/atari_vec.py --part groups``):
#: ale-py's threads and torch's already kept both cores busy (1.95 cores), so the overlap only added contention
#: and halved the forward's batch. Build ``AleVecEnv(..., groups=2)`` to overlap where cores sit idle.
DEFAULT_GROUPS = 1
#: ``gymnasium.make`` keyword arguments of ALE ids that carry over to ``AtariVectorEnv``.
ENV_OPTIONS = ("repeat_action_probability", "full_action_space", "max_num_frames_per_episode")


def vector_options(
    registered: Mapping[str, Any],
    env_kwargs: Mapping[str, Any],
    wrapper_kwargs: Mapping[str, Any],
    frame_stack: int | None,
) -> dict[str, Any]:
    """``AleVecEnv``'s keyword arguments for SB3's ``AtariWrapper(**wrapper_kwargs)`` + ``VecFrameStack(frame_stack)``
    over ``gymnasium.make(id, **env_kwargs)`` of an id registered with ``registered`` kwargs; refuses in one line
    what ``AtariVectorEnv`` cannot do."""
    for key in wrapper_kwargs:
        if key not in WRAPPER_OPTIONS:
            valid = ", ".join(WRAPPER_OPTIONS)
            raise PgplugError(f"vec_env ale cannot apply AtariWrapper's {key!r}; it takes: {valid}")
    for key in env_kwargs:
        if key not in (*ENV_OPTIONS, "frameskip"):
            raise PgplugError(f"vec_env ale cannot pass the env argument {key!r}; it takes: {', '.join(ENV_OPTIONS)}")
    size = int(wrapper_kwargs.get("screen_size", 84))
    options = {
        "game": registered["game"],
        "noop_max": int(wrapper_kwargs.get("noop_max", 30)),
        "frameskip": int(wrapper_kwargs.get("frame_skip", 4)),
        "img_height": size,
        "img_width": size,
        "stack_num": int(frame_stack or 1),
        "terminal_on_life_loss": bool(wrapper_kwargs.get("terminal_on_life_loss", True)),
        "clip_reward": bool(wrapper_kwargs.get("clip_reward", True)),
    }
    for key in ENV_OPTIONS:
        if key in env_kwargs or key in registered:
            options[key] = env_kwargs.get(key, registered.get(key))
    return options


class _AleGroup:
    """One ``AtariVectorEnv`` stepping one group of an :class:`AleVecEnv`'s envs, and SB3's bookkeeping of them
    (lives, raw game scores and frames, the frames since each agent's episode began)."""

    def __init__(self, vector: Any, writers: list[ResultsWriter], env: AleVecEnv) -> None:
        self.vector, self.writers, self.env = vector, writers, env
        n = vector.num_envs
        self.returns = np.zeros(n)
        self.frames = np.zeros(n, dtype=np.int64)
        self.lives = np.zeros(n, dtype=np.int64)
        self.fresh = np.full(n, env.stack)  # frames since the agent's episode began, up to the stack

    def reset(self, seeds: np.ndarray | None) -> np.ndarray:
        obs, info = self.vector.reset(seed=seeds)
        self.returns[:] = 0
        self.frames[:] = info["episode_frame_number"]
        self.lives[:] = info["lives"]
        self.fresh[:] = 1
        return self._mask_stale(obs)

    def send(self, actions: np.ndarray) -> None:
        self.vector.send(np.asarray(actions, dtype=np.int64).reshape(self.vector.num_envs))

    def recv(self) -> VecEnvStepReturn:
        obs, rewards, terminated, truncated, info = self.vector.recv()
        lives = info["lives"]
        life_lost = terminated & (lives < self.lives)  # a game over resets, and a reset restores the lives
        dones = terminated | truncated
        game_over = dones & ~life_lost
        self.lives[:] = lives
        self.returns += rewards
        self.fresh += 1
        self.fresh[dones] = 1
        infos: list[dict[str, Any]] = [
            {"lives": int(lives[i]), "TimeLimit.truncated": bool(truncated[i] and not terminated[i])}
            for i in range(len(lives))
        ]
        if dones.any():
            final = info.get("final_obs", obs)
            for i in np.flatnonzero(dones):
                infos[i]["terminal_observation"] = final[i]
            for i in np.flatnonzero(game_over):
                self._end_game(i, infos[i])
        self.frames[:] = info["episode_frame_number"]
        obs = self._mask_stale(obs)
        reward = np.sign(rewards) if self.env.clip_reward else rewards
        return obs, reward.astype(np.float32), dones, infos

    def _end_game(self, i: int, info: dict[str, Any]) -> None:
        episode = {
            "r": float(self.returns[i]),
            "l": int(self.frames[i] + self.env.frameskip),
            "t": round(time.time() - self.env.t_start, 6),
        }
        info["episode"] = episode
        self.returns[i] = 0
        if self.writers:
            self.writers[i].write_row(episode)

    def _mask_stale(self, obs: np.ndarray) -> np.ndarray:
        """Zero the stacked frames from before the agent's episode began, as ``VecFrameStack`` has them."""
        stack = self.env.stack
        stale = np.arange(stack) < (stack - self.fresh)[:, None]
        if stale.any():
            obs[stale] = 0
        return obs


class AleVecEnv(VecEnv):
    """SB3's ``make_atari_env`` + ``VecFrameStack`` on ``AtariVectorEnv`` objects (see the module docstring).

    The envs are split into ``groups`` of consecutive envs, each stepped by its own ``AtariVectorEnv``: a
    :class:`~pgplug.contracts.vec_env.GroupSteppedVecEnv`, whose groups a collector can step one at a time so that
    one group's emulators run while the policy acts for another (``step_async``/``step_wait`` step them all).

    :param game: ale-py's ROM name (``pong``)
    :param num_envs: number of emulators
    :param groups: how many groups to split them into (at most ``num_envs``; 1: one ``AtariVectorEnv``)
    :param threads_per_group: each group's emulator threads (0: ale-py's choice)
    :param terminal_on_life_loss: a lost life ends the agent's episode (SB3's ``EpisodicLifeEnv``)
    :param clip_reward: rewards are their sign (SB3's ``ClipRewardEnv``); episode infos keep the raw score
    :param monitor_dir: write SB3's ``Monitor`` csv files here, one per env (``{start_index + i}.monitor.csv``)
    :param start_index: rank of the first env, for the monitor file names
    :param env_id: the gymnasium id, written in the monitor files' header
    :param vector_kwargs: ``AtariVectorEnv``'s preprocessing and emulator options (``noop_max``, ``stack_num``, ...)
    """

    def __init__(
        self,
        game: str,
        num_envs: int,
        *,
        groups: int = 1,
        threads_per_group: int = 0,
        terminal_on_life_loss: bool = True,
        clip_reward: bool = True,
        monitor_dir: str | Path | None = None,
        start_index: int = 0,
        env_id: str = "",
        **vector_kwargs: Any,
    ) -> None:
        from ale_py.vector_env import AtariVectorEnv

        if not 1 <= groups <= num_envs:
            raise PgplugError(f"vec_env ale splits {num_envs} envs into 1 to {num_envs} groups, not {groups}")
        bounds = np.linspace(0, num_envs, groups + 1).round().astype(int)
        #: The envs of each group, consecutive: ``slice(first, stop)``.
        self.groups = tuple(slice(int(a), int(b)) for a, b in itertools.pairwise(bounds))
        vectors = [
            AtariVectorEnv(
                game,
                group.stop - group.start,
                num_threads=threads_per_group,
                autoreset_mode="SameStep",
                episodic_life=False,
                life_loss_info=terminal_on_life_loss,
                reward_clipping=False,
                use_fire_reset=True,
                maxpool=True,
                grayscale=True,
                **vector_kwargs,
            )
            for group in self.groups
        ]
        super().__init__(num_envs, vectors[0].single_observation_space, vectors[0].single_action_space)
        self.clip_reward = clip_reward
        self.stack = self.observation_space.shape[0]
        self.frameskip = int(vector_kwargs.get("frameskip", 4))
        self.t_start = time.time()
        if monitor_dir is not None:
            os.makedirs(monitor_dir, exist_ok=True)
        writers = (
            [
                ResultsWriter(
                    os.path.join(monitor_dir, str(start_index + i)), header={"t_start": self.t_start, "env_id": env_id}
                )
                for i in range(num_envs)
            ]
            if monitor_dir is not None
            else []
        )
        self._writers = writers
        self._groups = [_AleGroup(vector, writers[envs], self) for vector, envs in zip(vectors, self.groups)]

    def reset(self) -> VecEnvObs:
        """Reset every game (seeded if ``seed()`` was called since the last reset) and clear the bookkeeping."""
        seeds = None if self._seeds[0] is None else np.asarray(self._seeds, dtype=np.int64)
        obs = [group.reset(None if seeds is None else seeds[envs]) for group, envs in zip(self._groups, self.groups)]
        self._reset_seeds()
        self.reset_infos = [{} for _ in range(self.num_envs)]
        return np.concatenate(obs)

    def send_group(self, group: int, actions: np.ndarray) -> None:
        """Send group ``group``'s actions to its emulator threads; :meth:`recv_group` collects the results."""
        self._groups[group].send(actions)

    def recv_group(self, group: int) -> VecEnvStepReturn:
        """Group ``group``'s observations, rewards, dones and infos, as SB3's Atari pipeline gives them."""
        return self._groups[group].recv()

    def step_async(self, actions: np.ndarray) -> None:
        """Send every group its actions; whatever runs before :meth:`step_wait` overlaps the emulators."""
        actions = np.asarray(actions)
        for group, envs in zip(self._groups, self.groups):
            group.send(actions[envs])

    def step_wait(self) -> VecEnvStepReturn:
        """Every group's results, concatenated."""
        results = [group.recv() for group in self._groups]
        if len(results) == 1:
            return results[0]
        obs, rewards, dones, infos = zip(*results)
        return np.concatenate(obs), np.concatenate(rewards), np.concatenate(dones), [i for part in infos for i in part]

    def close(self) -> None:
        for group in self._groups:
            group.vector.close()
        for writer in self._writers:
            writer.close()

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        if attr_name == "render_mode":
            return [None for _ in self._get_indices(indices)]
        raise self._no_env_objects(f"attribute {attr_name!r}")

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        raise self._no_env_objects(f"attribute {attr_name!r}")

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        if method_name == "get_action_meanings":
            meanings = [str(action).rpartition(".")[2] for action in self._groups[0].vector.ale.get_action_set()]
            return [meanings for _ in self._get_indices(indices)]
        raise self._no_env_objects(f"method {method_name!r}")

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        """True for ``Monitor`` and ``AtariWrapper``, whose behaviour this env gives (``evaluate_policy`` reads the
        Monitor's episode infos)."""
        wrapped = wrapper_class in (Monitor, AtariWrapper)
        return [wrapped for _ in self._get_indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        raise PgplugError("vec_env ale renders no frames; use vec_env dummy (the default) to render")

    @staticmethod
    def _no_env_objects(what: str) -> PgplugError:
        return PgplugError(f"vec_env ale has no per-env {what}: AtariVectorEnvs step the envs; use vec_env dummy")
