"""Building vectorized environments from gymnasium ids, the way rl-baselines3-zoo does.

:class:`EnvSpec` is plain, picklable data: the CLI builds the training env, the evaluation env and
(for A3C) each worker's envs from the same spec, in whatever process needs them.
"""

from __future__ import annotations

import difflib
import importlib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import gymnasium as gym

from pgplug.errors import PgplugError, one_line
from pgplug.validation import check_keywords, import_dotted, keyword_parameters


def _register_atari() -> None:
    try:
        import ale_py
    except ImportError:
        return
    gym.register_envs(ale_py)


def check_env_id(env_id: str) -> str:
    """Return ``env_id`` if gymnasium knows it, else fail naming the closest registered ids.

    ``module:EnvId`` imports ``module`` first (gymnasium's convention for third-party envs).
    """
    _register_atari()
    module, _, name = env_id.rpartition(":")
    if module:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise PgplugError(f"cannot import env module {module!r}: {exc}") from exc
    if name in gym.registry:
        return env_id
    close = difflib.get_close_matches(name, list(gym.registry), n=5, cutoff=0.6)
    hint = f"; did you mean: {', '.join(close)}?" if close else "; see gymnasium.pprint_registry() for the ids"
    raise PgplugError(f"unknown env {env_id!r}{hint}")


def registered(env_id: str) -> gym.envs.registration.EnvSpec:
    """gymnasium's registry entry of an id checked by :func:`check_env_id`."""
    return gym.registry[env_id.rpartition(":")[2]]


def check_env_kwargs(env_id: str, kwargs: Mapping[str, Any]) -> None:
    """Refuse, in one line, a keyword argument that neither ``gymnasium.make`` nor the env of ``env_id`` takes."""
    if not kwargs:
        return
    creator = registered(env_id).entry_point
    if isinstance(creator, str):
        try:
            creator = gym.envs.registration.load_env_creator(creator)
        except Exception as exc:
            raise PgplugError(f"cannot load the env {env_id!r} ({creator}): {one_line(exc)}") from exc
    make_keywords = keyword_parameters(gym.make)[0]
    check_keywords("env argument", creator, kwargs, reserved=("id",), also=make_keywords, label=env_id)


def is_atari(env_id: str) -> bool:
    """True for ids served by ale_py (``PongNoFrameskip-v4``, ``ALE/Pong-v5``, ...)."""
    entry_point = registered(env_id).entry_point
    return "ale_py" in str(entry_point) or "AtariEnv" in str(entry_point)


def check_atari_rom(env_id: str) -> None:
    """Fail in one line when the ROM of an Atari id is not installed."""
    game = registered(env_id).kwargs.get("game")
    if game is None:
        return
    try:
        import ale_py.roms
    except ImportError as exc:
        raise PgplugError(f"{env_id!r} needs ale-py: pip install 'gymnasium[atari]'") from exc
    roms_dir = Path(os.environ.get("ALE_ROMS_DIR") or Path(ale_py.roms.__file__).parent)
    rom = roms_dir / f"{game}.bin"
    if not rom.is_file():
        raise PgplugError(f"the Atari ROM for {env_id!r} is missing ({rom}); reinstall ale-py, which ships the ROMs")


def run_name(env_id: str) -> str:
    """A filesystem-safe name for an env id: ``ALE/Pong-v5`` → ``ALE-Pong-v5``."""
    return re.sub(r"[^A-Za-z0-9_.\-]", "-", env_id.rpartition(":")[2])


@dataclass(frozen=True)
class WrapperChain:
    """Applies ``(dotted class path, kwargs)`` wrappers in order; picklable because it holds strings.

    :param key: the config key the wrappers come from (``env_wrapper``, ``vec_env_wrapper``), for error messages
    """

    wrappers: tuple[tuple[str, dict[str, Any]], ...]
    key: str = "env_wrapper"

    def __call__(self, env: Any) -> Any:
        for path, kwargs in self.wrappers:
            wrapper = import_dotted(path)
            try:
                env = wrapper(env, **kwargs)
            except (TypeError, ValueError, AssertionError) as exc:
                raise PgplugError(f"{self.key} {path} with {kwargs} failed: {one_line(exc)}") from exc
        return env


ATARI_WRAPPER = "stable_baselines3.common.atari_wrappers.AtariWrapper"


@dataclass(frozen=True)
class EnvSpec:
    """Everything needed to build the vectorized env of a run, in any process.

    :param env_id: a registered gymnasium id
    :param n_envs: number of envs in the ``VecEnv``
    :param seed: base seed; env ``i`` is seeded ``seed + start_index + i``
    :param frame_stack: stack this many frames (``VecFrameStack``), or None
    :param normalize: ``VecNormalize`` keyword arguments, or None for no normalization
    :param wrappers: ``(dotted class path, kwargs)`` gymnasium wrappers, applied after ``Monitor``
    :param atari: apply SB3's ``AtariWrapper`` first, as ``make_atari_env`` does
    :param vec_env: ``dummy`` (in-process), ``subproc`` (one process per env) or ``ale`` (Atari ids: one ale-py
        ``AtariVectorEnv`` with SB3's Atari semantics, see :mod:`pgplug.runtime.ale_vector`)
    :param env_kwargs: keyword arguments of ``gymnasium.make``
    :param vec_env_wrappers: ``(dotted class path, kwargs)`` SB3 ``VecEnvWrapper`` classes, applied to the
        ``VecEnv`` before ``VecNormalize`` and the frame stack, as rl-baselines3-zoo applies its ``vec_env_wrapper``
    :param monitor_kwargs: keyword arguments of SB3's ``Monitor`` (``info_keywords``, ...)
    """

    env_id: str
    n_envs: int = 1
    seed: int | None = None
    frame_stack: int | None = None
    normalize: dict[str, Any] | None = None
    wrappers: tuple[tuple[str, dict[str, Any]], ...] = ()
    atari: bool = False
    vec_env: str = "dummy"
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    vec_env_wrappers: tuple[tuple[str, dict[str, Any]], ...] = ()
    monitor_kwargs: dict[str, Any] = field(default_factory=dict)

    def _wrapper_chain(self) -> WrapperChain | None:
        wrappers = tuple(w for w in self.wrappers if not (self.atari and w[0] == ATARI_WRAPPER))
        if self.atari:
            wrappers = ((ATARI_WRAPPER, {}), *wrappers)
        return WrapperChain(wrappers) if wrappers else None

    def _env_kwargs(self) -> dict[str, Any]:
        kwargs = dict(self.env_kwargs)
        if self.atari and registered(self.env_id).kwargs.get("frameskip", 1) != 1:
            # ALE/...-v5 ids skip frames themselves; AtariWrapper's max-and-skip must see every frame.
            kwargs.setdefault("frameskip", 1)
        return kwargs

    def _monitor_kwargs(self) -> dict[str, Any]:
        kwargs = dict(self.monitor_kwargs)
        if isinstance(kwargs.get("info_keywords"), list):  # YAML has no tuples; Monitor concatenates tuples
            kwargs["info_keywords"] = tuple(kwargs["info_keywords"])
        return kwargs

    def make_kwargs(self) -> dict[str, Any]:
        """The keyword arguments each env is made with (``gymnasium.make``): ``env_kwargs``, and ``frameskip=1`` for
        ALE ids that skip frames themselves (recorded in the zoo's run folder, whose tools rebuild the env)."""
        return self._env_kwargs()

    def to_json(self) -> dict[str, Any]:
        """Plain JSON data (saved in model zips, so SB3 opens them without pgplug installed)."""
        return {"env_spec": asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EnvSpec:
        fields = dict(data["env_spec"])
        for key in ("wrappers", "vec_env_wrappers"):
            fields[key] = tuple((path, dict(kwargs)) for path, kwargs in fields.get(key, ()))
        return cls(**fields)

    @classmethod
    def for_env_id(cls, env_id: str, **kwargs: Any) -> EnvSpec:
        """The zoo's default pipeline for an id: SB3's Atari wrappers and 4 stacked frames for Atari ids."""
        check_env_id(env_id)
        if is_atari(env_id):
            check_atari_rom(env_id)
            kwargs = {"atari": True, "frame_stack": 4, **kwargs}
        return cls(env_id, **kwargs)

    def __call__(self, n_envs: int, seed: int | None) -> Any:
        """The ``factory(n_envs, seed) -> VecEnv`` protocol of worker algorithms (A3C): each worker builds its own."""
        return replace(self, seed=seed).make_vec_env(n_envs=n_envs)

    def make_vec_env(
        self,
        *,
        n_envs: int | None = None,
        start_index: int = 0,
        monitor_dir: str | Path | None = None,
        saved_statistics: Callable[[Any], Any] | None = None,
        training: bool = True,
    ):
        """Build the ``VecEnv``: Monitor (+ csv files in ``monitor_dir``), wrappers, vec-env wrappers, VecNormalize,
        frame stack.

        :param n_envs: override the spec's ``n_envs`` (e.g. a single env for evaluation)
        :param start_index: rank of the first env, for distinct seeds and monitor files across workers
        :param saved_statistics: wraps the env in a ``VecNormalize`` with saved statistics (see
            :func:`pgplug.interop.compat.saved_statistics`); used instead of the spec's ``normalize``
        :param training: False for evaluation: frozen normalization statistics, raw rewards
        """
        from stable_baselines3.common.env_util import make_vec_env
        from stable_baselines3.common.preprocessing import is_image_space, is_image_space_channels_first
        from stable_baselines3.common.vec_env import (
            VecFrameStack,
            VecNormalize,
            VecTransposeImage,
        )

        from pgplug.runtime.runners import vec_env_class  # torch and SB3 only where envs are built

        if self.atari:
            _register_atari()  # this may be a fresh worker process
        if self.vec_env == "ale":
            env = self._ale_vec_env(n_envs or self.n_envs, start_index, monitor_dir)
        else:
            env = self._gym_vec_env(make_vec_env, vec_env_class(self.vec_env), n_envs, start_index, monitor_dir)
        if self.vec_env_wrappers:
            env = WrapperChain(self.vec_env_wrappers, "vec_env_wrapper")(env)
        if saved_statistics is not None:
            env = saved_statistics(env)
            env.training = training
            if not training:
                env.norm_reward = False
        elif self.normalize is not None:
            kwargs = dict(self.normalize)
            if not training:
                kwargs.update(training=False, norm_reward=False)
            env = VecNormalize(env, **kwargs)
        if self.frame_stack and self.vec_env != "ale":  # ale-py stacks the frames itself
            env = VecFrameStack(env, self.frame_stack)
        space = env.observation_space
        if isinstance(space, gym.spaces.Box) and is_image_space(space) and not is_image_space_channels_first(space):
            env = VecTransposeImage(env)
        return env

    def _gym_vec_env(
        self,
        make_vec_env: Callable[..., Any],
        vec_env_cls: type,
        n_envs: int | None,
        start_index: int,
        monitor_dir: str | Path | None,
    ) -> Any:
        """SB3's ``make_vec_env``: each env under ``Monitor`` and the spec's wrappers."""
        try:
            return make_vec_env(
                self.env_id,
                n_envs=n_envs or self.n_envs,
                seed=None if self.seed is None else self.seed + start_index,
                start_index=start_index,
                monitor_dir=None if monitor_dir is None else str(monitor_dir),
                wrapper_class=self._wrapper_chain(),
                env_kwargs=self._env_kwargs(),
                vec_env_cls=vec_env_cls,
                monitor_kwargs=self._monitor_kwargs(),
            )
        except gym.error.DependencyNotInstalled as exc:
            raise PgplugError(f"env {self.env_id!r} needs a missing package: {str(exc).splitlines()[0]}") from exc

    def _ale_vec_env(self, n_envs: int, start_index: int, monitor_dir: str | Path | None) -> Any:
        """One ``AtariVectorEnv`` doing what ``AtariWrapper`` and ``VecFrameStack`` do (``env_wrapper: AtariWrapper``
        and ``frame_stack`` map onto its options); other wrappers and non-Atari ids are refused in one line."""
        from pgplug.runtime.ale_vector import DEFAULT_GROUPS, AleVecEnv, vector_options

        if not is_atari(self.env_id):
            raise PgplugError(f"vec_env ale steps Atari ids only, not {self.env_id!r}; valid for it: dummy, subproc")
        others = [path for path, _ in self.wrappers if path != ATARI_WRAPPER]
        if others or not self.atari:
            what = f"the env wrapper {others[0]}" if others else "an Atari id without AtariWrapper (atari=False)"
            raise PgplugError(f"vec_env ale cannot apply {what}; it does AtariWrapper and frame_stack only")
        if self.monitor_kwargs:
            raise PgplugError(
                f"vec_env ale cannot take Monitor arguments {sorted(self.monitor_kwargs)}; use vec_env dummy"
            )
        wrapper_kwargs = next((kwargs for path, kwargs in self.wrappers if path == ATARI_WRAPPER), {})
        options = vector_options(registered(self.env_id).kwargs, self.env_kwargs, wrapper_kwargs, self.frame_stack)
        env = AleVecEnv(
            num_envs=n_envs,
            groups=min(DEFAULT_GROUPS, n_envs),
            monitor_dir=monitor_dir,
            start_index=start_index,
            env_id=self.env_id,
            **options,
        )
        if self.seed is not None:
            env.seed(self.seed + start_index)
        return env
