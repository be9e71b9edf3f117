"""Evaluate a model: episode returns and lengths, their mean and spread, the human-normalised Atari score.

The episodes are SB3's ``evaluate_policy(return_episode_rewards=True)``: with a ``Monitor``-wrapped
env (every env pgplug and SB3 build) these are the true game scores, whatever reward clipping or
life-loss resets the Atari wrappers apply. The human-normalised score counts complete episodes only (ended by
the game, not cut by a step limit). Videos are H.264 mp4, written with the ffmpeg binary imageio-ffmpeg ships,
so neither moviepy nor a system ffmpeg is needed.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.resources
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium as gym
import numpy as np
import yaml
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecVideoRecorder

from pgplug.errors import PgplugError
from pgplug.validation import check_positive_int


@dataclass(frozen=True)
class EvaluationResult:
    """The outcome of :func:`evaluate`.

    :param returns: undiscounted return of each episode
    :param lengths: steps of each episode
    :param mean: mean return
    :param std: standard deviation of the returns
    :param human_normalized: 100·(mean − random)/(human − random) of the complete episodes' returns, for Atari
        games with published reference scores (``pgplug/data/atari_scores.yml``); None for other envs or when
        no episode completed
    :param env_id: the evaluated env's id, when known
    :param videos: the mp4 files written
    :param truncated: for each episode, whether a step limit cut it short (``TimeLimit.truncated``) rather
        than the game ending it
    """

    returns: list[float]
    lengths: list[int]
    mean: float
    std: float
    human_normalized: float | None = None
    env_id: str | None = None
    videos: list[Path] = field(default_factory=list)
    truncated: list[bool] = field(default_factory=list)

    @property
    def complete_returns(self) -> list[float]:
        """The returns of the episodes the game itself ended (a human-normalised score means those only)."""
        flags = self.truncated or [False] * len(self.returns)
        return [r for r, cut in zip(self.returns, flags, strict=True) if not cut]

    def human_normalized_line(self) -> str | None:
        """``human-normalised score over N complete episodes: X%`` (None when there is no reference score)."""
        if self.env_id is None or atari_game(self.env_id) not in atari_reference_scores():
            return None
        complete = self.complete_returns
        if self.human_normalized is None or not complete:
            return "human-normalised score: none (no episode completed; all were cut by a step limit)"
        return f"human-normalised score over {len(complete)} complete episodes: {self.human_normalized:.1f}%"


# -- human-normalised Atari scores --------------------------------------------------------------


@functools.cache
def atari_reference_scores() -> dict[str, tuple[float, float]]:
    """``game → (random score, human score)`` from the Nature DQN paper's table (see the data file)."""
    text = (importlib.resources.files("pgplug") / "data" / "atari_scores.yml").read_text()
    return {game: (float(s["random"]), float(s["human"])) for game, s in yaml.safe_load(text).items()}


def atari_game(env_id: str) -> str | None:
    """The ale-py game name of an Atari id (``PongNoFrameskip-v4`` → ``pong``), None for other ids."""
    try:
        import ale_py

        gym.register_envs(ale_py)
    except ImportError:
        return None
    spec = gym.registry.get(env_id.rpartition(":")[2])
    if spec is None or "ale_py" not in str(spec.entry_point):
        return None
    return spec.kwargs.get("game")


def human_normalized_score(env_id: str, score: float) -> float | None:
    """100·(score − random)/(human − random) for an Atari id in the reference table, else None."""
    game = atari_game(env_id)
    if game is None or game not in atari_reference_scores():
        return None
    random, human = atari_reference_scores()[game]
    return 100.0 * (score - random) / (human - random)


# -- video --------------------------------------------------------------------------------------


class H264VideoRecorder(VecVideoRecorder):
    """SB3's ``VecVideoRecorder`` (same triggers, frames and file names) writing H.264 mp4 that browsers play.

    SB3's recorder writes through moviepy, OpenCV's bundled FFmpeg only MPEG-4 part 2 (``mp4v``), which
    browsers do not play. This one pipes the frames to the ffmpeg binary that imageio-ffmpeg ships: ``libx264``,
    ``yuv420p`` (which needs even frame sizes: an odd last row or column is repeated), ``+faststart``.
    """

    def __init__(
        self,
        venv: VecEnv,
        video_folder: str | Path,
        record_video_trigger: Callable[[int], bool],
        video_length: int = 200,
        name_prefix: str = "rl-video",
    ) -> None:
        # SB3 checks for moviepy last, once every attribute is set; this class does not need it.
        with contextlib.suppress(gym.error.DependencyNotInstalled):
            super().__init__(venv, str(video_folder), record_video_trigger, video_length, name_prefix)
        self.videos: list[Path] = []

    def _stop_recording(self) -> None:
        assert self.recording, "_stop_recording was called, but no recording was started"
        if self.recorded_frames:
            write_h264(Path(self.video_path), self.recorded_frames, self.frames_per_sec)
            self.videos.append(Path(self.video_path))
        self.recorded_frames = []
        self.recording = False

    def flush(self) -> None:
        """Write the video being recorded now, without closing the env."""
        if self.recording:
            self._stop_recording()


def even_frame(frame: np.ndarray) -> np.ndarray:
    """An RGB frame with even height and width (``yuv420p`` halves both), repeating an odd last row/column."""
    frame = np.asarray(frame, dtype=np.uint8)
    height, width = frame.shape[:2]
    return np.pad(frame, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")


def write_h264(path: Path, frames: list[np.ndarray], fps: float) -> None:
    """Write RGB frames as an H.264 mp4 with the ffmpeg binary imageio-ffmpeg ships."""
    import imageio_ffmpeg

    first = even_frame(frames[0])
    height, width = first.shape[:2]
    writer = imageio_ffmpeg.write_frames(
        str(path),
        (width, height),
        fps=fps,
        codec="libx264",
        pix_fmt_out="yuv420p",
        macro_block_size=1,
        output_params=["-movflags", "+faststart"],
        ffmpeg_log_level="error",
    )
    writer.send(None)
    try:
        for frame in frames:
            writer.send(np.ascontiguousarray(even_frame(frame)[:height, :width]).tobytes())
    finally:
        writer.close()


# -- evaluation ---------------------------------------------------------------------------------

#: ``on_episode(episodes done, episode return, truncated)``, called as each evaluation episode ends.
EpisodeHook = Callable[[int, float, bool], None]


class EpisodeTracker:
    """A callback for SB3's ``evaluate_policy`` that records, for each episode it counts, whether a step limit
    truncated it, and reports each episode as it ends.

    ``evaluate_policy`` calls it with its ``locals()`` before it counts an episode; the episode is counted
    under the very condition SB3 uses (done, and with a ``Monitor`` the ``episode`` entry of the info, which
    a life lost on Atari lacks). Episodes still running when the evaluation has enough are never counted, so
    no return is cut short by the end of the evaluation.
    """

    def __init__(self, on_episode: EpisodeHook | None = None) -> None:
        self.on_episode = on_episode
        self.truncated: list[bool] = []

    def __call__(self, local: dict, _globals: dict) -> None:
        info = local["info"]
        if not local["done"] or (local["is_monitor_wrapped"] and "episode" not in info):
            return
        truncated = bool(info.get("TimeLimit.truncated", False))
        self.truncated.append(truncated)
        if self.on_episode is not None:
            episode = info.get("episode")
            value = episode["r"] if episode is not None else local["current_rewards"][local["i"]]
            self.on_episode(len(self.truncated), float(value), truncated)


def make_eval_env(env_id: str, seed: int | None = None, render: bool = False) -> VecEnv:
    """One env for evaluation, as pgplug trains on it: SB3's Atari pipeline (frame stack 4) for Atari ids."""
    from stable_baselines3.common.env_util import make_atari_env, make_vec_env
    from stable_baselines3.common.vec_env import VecFrameStack

    env_kwargs = {"render_mode": "rgb_array"} if render else None
    if atari_game(env_id) is not None:
        return VecFrameStack(make_atari_env(env_id, n_envs=1, seed=seed, env_kwargs=env_kwargs), 4)
    return make_vec_env(env_id, n_envs=1, seed=seed, env_kwargs=env_kwargs)


def env_id_of(env: VecEnv) -> str | None:
    """The gymnasium id of the envs inside a ``VecEnv``, when they carry a spec."""
    try:
        spec = env.get_attr("spec", indices=[0])[0]
    except (AttributeError, IndexError):
        return None
    return getattr(spec, "id", None)


class _StepsPlayed(Exception):
    """Ends :func:`play_steps`' run of ``evaluate_policy`` once its steps are played."""


def play_steps(
    model: BaseAlgorithm, env: VecEnv, n_steps: int, deterministic: bool, callback: EpisodeTracker | None = None
) -> tuple[list[float], list[int]]:
    """Play ``n_steps`` steps of one env, as rl_zoo3's ``enjoy -n`` does, with SB3's ``evaluate_policy`` (so the
    policy's state and the Monitor's true episode scores are handled the same); the episodes that ended in them.
    ``callback`` sees each step as ``evaluate_policy``'s callback does."""
    returns: list[float] = []
    lengths: list[int] = []
    steps = 0

    def count(local_vars: dict, _globals: dict) -> None:
        nonlocal steps
        steps += 1
        if callback is not None:
            callback(local_vars, _globals)
        info, i = local_vars["info"], local_vars["i"]
        if local_vars["done"] and "episode" in info:
            returns.append(float(info["episode"]["r"]))
            lengths.append(int(info["episode"]["l"]))
        elif local_vars["done"] and not local_vars["is_monitor_wrapped"]:
            returns.append(float(local_vars["current_rewards"][i]))
            lengths.append(int(local_vars["current_lengths"][i]))
        if steps >= n_steps:
            raise _StepsPlayed

    with contextlib.suppress(_StepsPlayed):
        evaluate_policy(model, env, n_eval_episodes=n_steps, deterministic=deterministic, callback=count)
    return returns, lengths


def evaluate(
    model: BaseAlgorithm,
    env: str | gym.Env | VecEnv,
    n_episodes: int = 10,
    deterministic: bool = True,
    video_folder: str | Path | None = None,
    *,
    video_length: int = 1_000,
    env_id: str | None = None,
    seed: int | None = None,
    n_timesteps: int | None = None,
    on_episode: EpisodeHook | None = None,
) -> EvaluationResult:
    """Play ``n_episodes`` episodes with ``model`` and summarise them.

    :param model: any SB3 model (pgplug's, SB3's, RecurrentPPO: the LSTM state is carried)
    :param env: a gymnasium id (built with :func:`make_eval_env`), an env or a ``VecEnv``; pass frozen
        ``VecNormalize`` statistics (``training=False, norm_reward=False``) when the model was trained with them
    :param n_episodes: episodes to play
    :param deterministic: the most likely action rather than a sample
    :param video_folder: record the first ``video_length`` steps to an mp4 here (the env must render
        ``rgb_array``; an id is built that way)
    :param video_length: steps to record
    :param env_id: the id for the human-normalised score when ``env`` does not carry it
    :param seed: seed of an env built from an id
    :param n_timesteps: play this many steps instead of ``n_episodes`` episodes (see :func:`play_steps`)
    :param on_episode: called as each episode ends with (episodes done, its return, whether a step limit cut it)
    """
    n_episodes = check_positive_int("n_episodes", n_episodes)
    if isinstance(env, str):
        env_id = env_id or env
        env = make_eval_env(env, seed=seed, render=video_folder is not None)
    elif not isinstance(env, VecEnv):
        single = env
        env = DummyVecEnv([lambda: single])
    env_id = env_id or env_id_of(env)
    recorder = None
    if video_folder is not None:
        if env.render_mode != "rgb_array":
            raise PgplugError(
                f"cannot record video: the env renders with render_mode={env.render_mode!r}; "
                "build it with render_mode='rgb_array' (or pass the env id)"
            )
        prefix = f"{type(model).__name__.lower()}-{(env_id or 'env').replace('/', '-')}"
        recorder = H264VideoRecorder(env, video_folder, lambda step: step == 0, video_length, prefix)
        env = recorder
    tracker = EpisodeTracker(on_episode)
    try:
        if n_timesteps is not None:
            n_steps = check_positive_int("n_timesteps", n_timesteps)
            returns, lengths = play_steps(model, env, n_steps, deterministic, tracker)
        else:
            returns, lengths = evaluate_policy(
                model,
                env,
                n_eval_episodes=int(n_episodes),
                deterministic=deterministic,
                return_episode_rewards=True,
                callback=tracker,
            )
    except gym.error.DependencyNotInstalled as exc:
        what = "record video of" if recorder is not None else "run"
        raise PgplugError(f"cannot {what} {env_id or 'the env'}: {str(exc).splitlines()[0]}") from exc
    if recorder is not None:
        recorder.flush()
    if not returns:
        raise PgplugError(f"no episode ended in the {n_timesteps} steps played; play more steps or whole episodes")
    returns_array = np.asarray(returns, dtype=np.float64)
    truncated = tracker.truncated if len(tracker.truncated) == len(returns_array) else [False] * len(returns_array)
    complete = returns_array[~np.asarray(truncated, dtype=bool)]
    human = None
    if env_id is not None and len(complete):
        human = human_normalized_score(env_id, float(complete.mean()))
    return EvaluationResult(
        returns=[float(r) for r in returns_array],
        lengths=[int(n) for n in lengths],
        mean=float(returns_array.mean()),
        std=float(returns_array.std()),
        human_normalized=human,
        env_id=env_id,
        videos=[] if recorder is None else list(recorder.videos),
        truncated=truncated,
    )


__all__ = [
    "EpisodeTracker",
    "EvaluationResult",
    "H264VideoRecorder",
    "atari_game",
    "atari_reference_scores",
    "evaluate",
    "human_normalized_score",
    "make_eval_env",
]
