"""Learning tests train until an evaluation reaches a score, within a budget: a threshold checked once, at a fixed
step, sits a chaotic trajectory's rounding away from failing on another CPU."""

from __future__ import annotations

from stable_baselines3.common.callbacks import EvalCallback, StopTrainingOnRewardThreshold
from stable_baselines3.common.env_util import make_vec_env


def until_reward(
    env_id: str, threshold: float, every_steps: int, n_envs: int, eval_seed: int, n_eval_episodes: int = 5
) -> EvalCallback:
    """An ``EvalCallback`` that evaluates every ``every_steps`` env steps (of a learner with ``n_envs`` envs)
    and stops training once the mean reward reaches ``threshold``; its ``best_mean_reward`` is the test's result."""
    return EvalCallback(
        make_vec_env(env_id, n_envs=1, seed=eval_seed),
        eval_freq=max(every_steps // n_envs, 1),
        n_eval_episodes=n_eval_episodes,
        callback_on_new_best=StopTrainingOnRewardThreshold(reward_threshold=threshold),
        verbose=0,
    )
