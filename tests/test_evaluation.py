"""pgplug.interop.evaluation: SB3's episode returns, their summary, human-normalised Atari scores and mp4 videos."""

from __future__ import annotations

from pathlib import Path

import cv2
import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from sb3_contrib import RecurrentPPO
from stable_baselines3.common.env_util import make_atari_env, make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecFrameStack

import pgplug
from pgplug.errors import PgplugError
from pgplug.interop.evaluation import (
    EvaluationResult,
    atari_game,
    atari_reference_scores,
    evaluate,
    human_normalized_score,
)


class PaintEnv(gym.Env):
    """Renders a 24×32 frame whose red channel is the step count; 6-step episodes, reward = action."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}
    observation_space = spaces.Box(0.0, 1.0, (1,), dtype=np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self, render_mode: str | None = "rgb_array", render_error: bool = False) -> None:
        self.render_mode = render_mode
        self.render_error = render_error
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, dtype=np.float32), {}

    def step(self, action):
        self.t += 1
        return np.full(1, self.t / 6, dtype=np.float32), float(action), self.t >= 6, False, {}

    def render(self):
        if self.render_error:
            raise gym.error.DependencyNotInstalled(
                'pygame is not installed, run `pip install "gymnasium[classic-control]"`'
            )
        frame = np.zeros((24, 32, 3), dtype=np.uint8)
        frame[..., 0] = 40 * self.t
        return frame


# -- reference scores ---------------------------------------------------------------------------


def test_reference_table_holds_the_49_nature_dqn_games_by_their_ale_names() -> None:
    table = atari_reference_scores()
    assert len(table) == 49
    atari_game("PongNoFrameskip-v4")  # registers the ALE ids
    assert table["pong"] == (-20.7, 9.3) and table["breakout"] == (1.7, 31.8) and table["seaquest"] == (68.4, 20181.8)
    ale_games = {atari_game(env_id) for env_id in list(gym.registry) if env_id.startswith("ALE/")}
    assert set(table) <= ale_games
    assert all(random < human for random, human in table.values())


def test_human_normalized_scores() -> None:
    assert human_normalized_score("PongNoFrameskip-v4", 9.3) == pytest.approx(100.0)
    assert human_normalized_score("ALE/Pong-v5", -20.7) == pytest.approx(0.0)
    assert human_normalized_score("BreakoutNoFrameskip-v4", 16.75) == pytest.approx(50.0)
    assert human_normalized_score("ALE/Breakout-v5", 61.9) == pytest.approx(200.0)
    assert human_normalized_score("ALE/Berzerk-v5", 500.0) is None  # Atari, but not in the Nature table
    assert human_normalized_score("CartPole-v1", 500.0) is None
    assert atari_game("SpaceInvadersNoFrameskip-v4") == "space_invaders" and atari_game("CartPole-v1") is None


# -- evaluation ---------------------------------------------------------------------------------


def test_evaluate_returns_sb3_episode_returns_and_their_summary() -> None:
    model = pgplug.A2C("MlpPolicy", "CartPole-v1", seed=1, device="cpu")
    result = evaluate(model, make_vec_env("CartPole-v1", n_envs=1, seed=7), n_episodes=4)
    returns, lengths = evaluate_policy(
        model, make_vec_env("CartPole-v1", n_envs=1, seed=7), n_eval_episodes=4, return_episode_rewards=True
    )
    assert isinstance(result, EvaluationResult)
    assert result.returns == returns and result.lengths == lengths
    assert result.mean == pytest.approx(np.mean(returns)) and result.std == pytest.approx(np.std(returns))
    assert result.env_id == "CartPole-v1" and result.human_normalized is None and result.videos == []
    by_id = evaluate(model, "CartPole-v1", n_episodes=4, seed=7)
    assert by_id.returns == result.returns


def test_evaluate_carries_a_recurrent_policy_state() -> None:
    model = RecurrentPPO("MlpLstmPolicy", "CartPole-v1", seed=0, device="cpu")
    result = evaluate(model, "CartPole-v1", n_episodes=2, seed=0)
    returns, _ = evaluate_policy(
        model, make_vec_env("CartPole-v1", n_envs=1, seed=0), n_eval_episodes=2, return_episode_rewards=True
    )
    assert result.returns == returns and len(result.lengths) == 2


def test_video_is_an_mp4_of_the_rendered_frames(tmp_path: Path) -> None:
    model = pgplug.A2C("MlpPolicy", make_vec_env(PaintEnv), seed=0, device="cpu")
    result = evaluate(model, make_vec_env(PaintEnv), n_episodes=2, video_folder=tmp_path / "videos", video_length=4)
    assert result.returns[0] == result.returns[1] and result.lengths == [6, 6]  # deterministic env and policy
    assert [v.name for v in result.videos] == ["a2c-env-step-0-to-step-4.mp4"]
    video = cv2.VideoCapture(str(result.videos[0]))
    frames = []
    while True:
        ok, frame = video.read()
        if not ok:
            break
        frames.append(frame)
    assert len(frames) == 5 and frames[0].shape == (24, 32, 3)  # the reset frame and 4 steps
    red = [int(np.median(f[..., 2])) for f in frames]  # OpenCV reads BGR
    assert red == pytest.approx([0, 40, 80, 120, 160], abs=6)


def test_atari_evaluation_gives_the_human_normalized_score_and_a_video(tmp_path: Path) -> None:
    atari_game("PongNoFrameskip-v4")  # registers the ALE ids
    env_kwargs = {"render_mode": "rgb_array", "max_episode_steps": 120}
    env = VecFrameStack(make_atari_env("PongNoFrameskip-v4", n_envs=1, seed=0, env_kwargs=env_kwargs), 4)
    model = pgplug.A2C("CnnPolicy", env, seed=0, device="cpu")
    result = evaluate(model, env, n_episodes=1, video_folder=tmp_path, video_length=10)
    assert result.env_id == "PongNoFrameskip-v4" and len(result.returns) == 1
    # The step limit cut the one episode short: no score over complete episodes.
    assert result.truncated == [True] and result.complete_returns == [] and result.human_normalized is None
    assert result.human_normalized_line() == (
        "human-normalised score: none (no episode completed; all were cut by a step limit)"
    )
    assert len(result.videos) == 1 and result.videos[0].stat().st_size > 0
    video = cv2.VideoCapture(str(result.videos[0]))
    assert (video.get(cv2.CAP_PROP_FRAME_WIDTH), video.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (160, 210)


def test_bad_input_fails_in_one_line(tmp_path: Path) -> None:
    model = pgplug.A2C("MlpPolicy", make_vec_env(PaintEnv), seed=0, device="cpu")
    with pytest.raises(PgplugError, match=r"^n_episodes must be a positive integer, got 0$"):
        evaluate(model, make_vec_env(PaintEnv), n_episodes=0)
    no_render = make_vec_env(PaintEnv, env_kwargs={"render_mode": None})
    with pytest.raises(
        PgplugError, match=r"the env renders with render_mode=None; build it with render_mode='rgb_array'"
    ):
        evaluate(model, no_render, n_episodes=1, video_folder=tmp_path)
    broken = make_vec_env(PaintEnv, env_kwargs={"render_error": True})
    with pytest.raises(PgplugError, match=r"^cannot record video of the env: pygame is not installed"):
        evaluate(model, broken, n_episodes=1, video_folder=tmp_path)
