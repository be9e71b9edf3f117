"""``vec_env: ale`` (one ale-py ``AtariVectorEnv``) against SB3's Atari pipeline (``AtariWrapper`` + ``VecFrameStack``).

The two pipelines seed their emulators differently, so their games differ: the frames are compared as statistics
(per-pixel means over a few hundred random-action steps), the bookkeeping as counts and sums.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor

from pgplug import A2C, A3C
from pgplug.cli import main
from pgplug.errors import PgplugError
from pgplug.runtime.ale_vector import AleVecEnv
from pgplug.runtime.envs import ATARI_WRAPPER, EnvSpec
from tests.a3c_helpers import deadline, flat_params


def build(env_id: str, vec_env: str, n_envs: int = 4, seed: int = 0, **kwargs):
    return EnvSpec.for_env_id(env_id, n_envs=n_envs, seed=seed, vec_env=vec_env, **kwargs).make_vec_env()


def random_frames(env, steps: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The newest frame of each env at each step, and the first observation."""
    rng = np.random.default_rng(seed)
    first = env.reset()
    frames = []
    for _ in range(steps):
        obs, *_ = env.step(rng.integers(0, env.action_space.n, env.num_envs))
        frames.append(obs[:, -1])
    env.close()
    return np.stack(frames).astype(np.float64), first


def test_frames_match_sb3_pipeline_statistics() -> None:
    ours, sb3 = build("PongNoFrameskip-v4", "ale"), build("PongNoFrameskip-v4", "dummy")
    assert ours.observation_space == sb3.observation_space  # (4, 84, 84) uint8, channel first as CnnPolicy takes it
    (ale_frames, ale_first), (sb3_frames, sb3_first) = random_frames(ours, 300), random_frames(sb3, 300)
    assert ale_first.shape == sb3_first.shape == (4, 4, 84, 84) and ale_first.dtype == sb3_first.dtype == np.uint8
    # the first observation: a frame after the no-op start, older stack slots zero (VecFrameStack's reset)
    assert not ale_first[:, :3].any() and not sb3_first[:, :3].any()
    assert abs(ale_first[:, 3].mean() - sb3_first[:, 3].mean()) < 2
    ale_mean, sb3_mean = ale_frames.mean(axis=(0, 1)), sb3_frames.mean(axis=(0, 1))
    assert (
        np.abs(ale_mean - sb3_mean).mean() < 1
    )  # grey levels (measured 0.13); ale-py's grey conversion and resize are its own
    assert np.quantile(np.abs(ale_mean - sb3_mean), 0.99) < 10  # the ball and paddles move differently (3.6)
    assert abs(ale_frames.std() - sb3_frames.std()) < 1  # 47.24 and 47.25


def play_games(env, games: int, seed: int = 0) -> tuple[list[int], list[dict], list[float], list[np.ndarray]]:
    """Random play until ``games`` games of env 0 end: its dones per game, episode infos, rewards, observations."""
    rng = np.random.default_rng(seed)
    env.reset()
    dones_per_game, episodes, rewards, after_done = [0], [], [], []
    while len(episodes) < games:
        obs, reward, done, infos = env.step(rng.integers(0, env.action_space.n, env.num_envs))
        rewards.append(float(reward[0]))
        if done[0]:
            dones_per_game[-1] += 1
            assert infos[0]["terminal_observation"].shape == obs.shape[1:]
            after_done.append(obs[0])
        if "episode" in infos[0]:
            episodes.append(infos[0]["episode"])
            dones_per_game.append(0)
    env.close()
    return dones_per_game[:-1], episodes, rewards, after_done


@pytest.mark.parametrize("vec_env", ["ale", "dummy"])
def test_a_lost_life_ends_the_agents_episode_and_monitor_counts_the_game(vec_env: str) -> None:
    dones, episodes, _, after_done = play_games(build("BreakoutNoFrameskip-v4", vec_env, n_envs=2), games=2)
    assert dones == [5, 5]  # five lives: five dones per game, the Monitor's episode at the last
    assert all(not obs[:3].any() for obs in after_done)  # the stack restarts at every done
    assert all(e["l"] > 100 and e["r"] >= 0 for e in episodes)


def test_episode_returns_are_the_raw_game_score_and_rewards_are_clipped() -> None:
    spec = EnvSpec.for_env_id("SpaceInvadersNoFrameskip-v4", n_envs=2, seed=0, vec_env="ale")
    _, episodes, clipped, _ = play_games(spec.make_vec_env(), games=1)
    assert set(clipped) <= {-1.0, 0.0, 1.0}
    raw_spec = EnvSpec.for_env_id(
        "SpaceInvadersNoFrameskip-v4",
        n_envs=2,
        seed=0,
        vec_env="ale",
        wrappers=((ATARI_WRAPPER, {"clip_reward": False}),),
    )
    _, raw_episodes, raw, _ = play_games(raw_spec.make_vec_env(), games=1)
    assert raw_episodes[0]["r"] == episodes[0]["r"] == pytest.approx(sum(raw))  # the same seeded game
    assert max(raw) > 1 and episodes[0]["r"] > sum(clipped)  # Space Invaders scores 5 to 30 a hit


def test_seeding_reproduces_the_games() -> None:
    def observations(seed: int) -> np.ndarray:
        env = build("ALE/Pong-v5", "ale", n_envs=2, seed=seed)
        env.reset()
        actions = np.random.default_rng(0).integers(0, 6, (60, 2))
        out = np.stack([env.step(a)[0] for a in actions])
        env.close()
        return out

    assert np.array_equal(observations(3), observations(3))
    assert not np.array_equal(observations(3), observations(4))


def test_v5_ids_are_sticky_and_zoo_wrapper_options_map_onto_the_vector_env() -> None:
    spec = EnvSpec.for_env_id("ALE/Pong-v5", vec_env="ale", wrappers=((ATARI_WRAPPER, {"screen_size": 64}),))
    env = spec.make_vec_env()
    assert env.observation_space.shape == (4, 64, 64)
    assert env.env_is_wrapped(Monitor) == [True]
    assert env.env_method("get_action_meanings")[0][:2] == ["NOOP", "FIRE"]
    env.close()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: build("CartPole-v1", "ale"),
            "vec_env ale steps Atari ids only, not 'CartPole-v1'; valid for it: dummy",
        ),
        (
            lambda: build("PongNoFrameskip-v4", "ale", wrappers=((ATARI_WRAPPER, {"warp": 1}),)),
            "vec_env ale cannot apply AtariWrapper's 'warp'; it takes: noop_max",
        ),
        (
            lambda: build("PongNoFrameskip-v4", "ale", wrappers=(("gymnasium.wrappers.RecordEpisodeStatistics", {}),)),
            "vec_env ale cannot apply the env wrapper gymnasium.wrappers.RecordEpisodeStatistics",
        ),
        (lambda: build("PongNoFrameskip-v4", "ale", env_kwargs={"mode": 1}), "cannot pass the env argument 'mode'"),
        (lambda: build("PongNoFrameskip-v4", "ale", n_envs=1).get_attr("ale"), "has no per-env attribute 'ale'"),
        (lambda: build("PongNoFrameskip-v4", "ale", n_envs=1).get_images(), "vec_env ale renders no frames"),
    ],
)
def test_what_it_cannot_do_is_one_line(make, message: str) -> None:
    with pytest.raises(PgplugError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        make()
    assert "\n" not in str(info.value)


def test_a2c_trains_saves_loads_predicts_and_evaluates(tmp_path: Path) -> None:
    env = build("PongNoFrameskip-v4", "ale", n_envs=4)
    model = A2C("CnnPolicy", env, n_steps=5, seed=0)
    before = flat_params(model)
    model.learn(100)
    assert model.num_timesteps == 100 and not np.allclose(flat_params(model), before)
    model.save(tmp_path / "pong")
    loaded = A2C.load(tmp_path / "pong")
    obs = env.reset()
    assert np.array_equal(loaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])
    env.close()
    eval_env = build("PongNoFrameskip-v4", "ale", n_envs=1, seed=5)
    rewards, lengths = evaluate_policy(loaded, eval_env, n_eval_episodes=1, return_episode_rewards=True)
    assert -21 <= rewards[0] <= 21 and lengths[0] > 500  # a whole game of Pong, in raw score and frames
    eval_env.close()


def test_a3c_workers_build_their_own_ale_vector_envs() -> None:
    spec = EnvSpec.for_env_id("PongNoFrameskip-v4", vec_env="ale")
    model = A3C("CnnPolicy", spec, n_workers=2, n_envs_per_worker=2, t_max=5, seed=0)
    before = flat_params(model)
    with deadline(300):
        model.learn(200)
    assert model.num_timesteps >= 200
    assert not np.allclose(flat_params(model), before)


def test_cli_refuses_ale_for_a_non_atari_env_in_one_line(tmp_path: Path, capsys, plugin_host) -> None:
    args = ["train", "--algo", "a2c", "--env", "CartPole-v1", "--vec-env", "ale", "-n", "100", "-f", str(tmp_path)]
    assert main(args) != 0
    err = capsys.readouterr().err.strip()
    assert "vec_env ale steps Atari ids only" in err and "\n" not in err


def test_is_an_sb3_vec_env() -> None:
    env = build("PongNoFrameskip-v4", "ale", n_envs=2)
    assert isinstance(env, AleVecEnv)
    env.close()
