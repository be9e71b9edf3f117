"""The lean loop that collects time-major rollouts from an SB3 ``VecEnv``.

One collector serves every algorithm (REINFORCE, A2C and each A3C worker). It does what SB3's
``OnPolicyAlgorithm.collect_rollouts`` does, with the same random draws: the policy runs through the
algorithm's :class:`~pgplug.runtime.policy_runner.PolicyRunner` (SB3's own forward, or a fast runner);
each step is written once into preallocated buffers (the observation into the row the policy reads,
the forward's actions, values and log-probs with one ``cat`` per field per rollout); only the infos
of the envs whose episode ended are visited; and ``learn()`` without callbacks skips the per-step
callback protocol, which nothing would receive.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

from pgplug.contracts.rollout import Observation, Rollout
from pgplug.contracts.rollout import map_observation as _map
from pgplug.contracts.vec_env import GroupSteppedVecEnv
from pgplug.runtime.buffers import CollectedRollout, Outputs, rollout_buffer_class
from pgplug.runtime.policy_runner import PolicyRunner, StepOutputs

StepHook = Callable[[dict[str, Any]], bool]


def obs_to_tensor(obs: np.ndarray | dict[str, np.ndarray], device: th.device) -> Observation:
    if isinstance(obs, dict):
        return {key: th.as_tensor(value, device=device) for key, value in obs.items()}
    return th.as_tensor(obs, device=device)


class RolloutCollector:
    """Steps ``env`` with ``policy`` and records time-major rollouts.

    Keeps the last observation and episode-start flags between rollouts, like SB3's
    ``_last_obs`` / ``_last_episode_starts``; algorithms read and set them through the attributes.
    The returned :class:`Rollout` views buffers that the next ``collect`` overwrites.
    """

    def __init__(
        self,
        runner: PolicyRunner,
        env: VecEnv,
        gamma: float,
        bootstrap_truncation: bool = True,
        sde_sample_freq: int = -1,
        buffer: CollectedRollout | None = None,
    ) -> None:
        self.runner = runner
        self.policy = runner.policy
        self.env = env
        self.gamma = gamma
        self.bootstrap_truncation = bootstrap_truncation
        self.sde_sample_freq = sde_sample_freq
        self.n_envs = env.num_envs
        self.device = self.policy.device
        self._on_cpu = self.device.type == "cpu"
        #: Box actions are unscaled or clipped before the env takes them (looked up once, not at every step).
        self._box = isinstance(self.policy.action_space, spaces.Box)
        self.last_obs: np.ndarray | dict[str, np.ndarray] | None = None
        self.last_episode_starts = np.ones(self.n_envs, dtype=bool)
        #: Steps each env's current episode has run (an episode start counts from 0 whatever this says).
        self.episode_steps = np.zeros(self.n_envs, dtype=np.int64)
        #: Where rollouts are written: the algorithm's ``rollout_buffer``, or one of the collector's own.
        self.buffer = buffer if buffer is not None else self._own_buffer()
        #: Env steps (per env) the last ``collect`` took, kept up to date should it be interrupted.
        self.env_steps_taken = 0
        runner.reset()  # a new env: no state carries over from another one

    def _own_buffer(self) -> CollectedRollout:
        env = self.env
        cls = rollout_buffer_class(env.observation_space)
        return cls(1, env.observation_space, env.action_space, device=self.device, gamma=self.gamma, n_envs=self.n_envs)

    def collect(
        self,
        n_steps: int | None,
        on_step: StepHook | None = None,
        until: Callable[[int, np.ndarray], bool] | None = None,
        max_steps: int = 100_000,
        on_episodes_end: Callable[[list[dict[str, Any]], np.ndarray], None] | None = None,
    ) -> Rollout | None:
        """Collect ``n_steps`` steps per env (or, with ``n_steps=None``, until ``until(t, dones)``).

        ``on_step`` runs after every env step with the step's locals and may return False to
        abort: then ``collect`` returns None, as SB3's ``collect_rollouts`` returns False. Then, at
        a step where episodes ended, ``on_episodes_end`` gets the infos and dones of those envs only
        (SB3's ``_update_info_buffer`` arguments, without visiting every env's info).

        A :class:`~pgplug.contracts.vec_env.GroupSteppedVecEnv` with several groups, stepped with a fast runner, is
        stepped group by group (:meth:`_collect_in_groups`): the policy acts for one group while the others' envs step.
        """
        self.env_steps_taken = 0
        assert self.last_obs is not None, "reset the env and set last_obs before collecting"
        policy, runner = self.policy, self.runner
        runner.set_training_mode(False)
        if policy.use_sde:
            policy.reset_noise(self.n_envs)
        runner.begin_rollout(self.n_envs)
        self._step_hooks = (on_step, on_episodes_end)
        if n_steps is not None and self.steps_in_groups():
            return self._collect_in_groups(n_steps)
        limit = n_steps if n_steps is not None else max_steps
        stop_early = until if n_steps is None else None
        resample_noise_every = self.sde_sample_freq if policy.use_sde and self.sde_sample_freq > 0 else 0
        buffer, env = self.buffer, self.env
        step = 0
        first_step_times = np.where(self.last_episode_starts, 0, self.episode_steps)
        # The forward's actions, values and log-probs are kept as tensors and written into the buffers
        # once per rollout (one cat per field, instead of a row write per step).
        pending: Outputs = ([], [], [])
        while step < limit:
            if resample_noise_every and step % resample_noise_every == 0:
                policy.reset_noise(self.n_envs)
            if step >= buffer.__dict__.get("capacity", 0):  # the first rollout, or a collection that outgrows its rows
                if pending[0]:
                    buffer.write_outputs(step - len(pending[0]), pending)
                    pending = ([], [], [])
                buffer.ensure_rows(step, n_steps, self.last_obs)
            # The policy reads the observation from its buffer row: the step's one copy of it.
            outputs = runner.act(self._write_obs(step), self.last_episode_starts)
            actions_np, env_actions = self._env_actions(outputs[0])
            new_obs, rewards, dones, infos = env.step(env_actions)
            if not self._record_step(step, outputs, pending, actions_np, env_actions, new_obs, rewards, dones, infos):
                return None
            step += 1
            if stop_early is not None and stop_early(step, dones):
                break
        return self._finish(step, pending, first_step_times)

    def steps_in_groups(self) -> bool:
        """Whether collections step the env group by group: a fast runner that acts on any batch of envs (not a
        recurrent one), on the CPU, no gSDE noise, and an unwrapped env with several groups."""
        env = self.env
        return (
            self.runner.fast
            and self.runner.acts_on_env_groups
            and self._on_cpu  # the rows each group's forward reads are CPU tensors
            and not self.policy.use_sde
            # a wrapper (VecNormalize, VecMonitor) forwards the group methods to the env it wraps, bypassing itself
            and not isinstance(env, VecEnvWrapper)
            and isinstance(env, GroupSteppedVecEnv)
            and len(env.groups) > 1
        )

    def _collect_in_groups(self, n_steps: int) -> Rollout | None:
        """``collect(n_steps)`` with the policy acting for one group of envs while the other groups' envs step.

        Each step: receive group 0's step and act for it, receive group 1's and act for it, ...; the last group's
        step completes the vec-env step, which is recorded (``on_step`` may abort before any env steps again); then
        the groups acted for are sent and the last group is acted for and sent. Each env sees the same policy, the
        actions of the whole step are recorded together: only the order of the random draws differs from ``collect``'s.
        """
        env, runner, buffer = self.env, self.runner, self.buffer
        groups = env.groups
        first_step_times = np.where(self.last_episode_starts, 0, self.episode_steps)
        buffer.ensure_rows(n_steps, n_steps, self.last_obs)  # every row, and the spare one for V(last obs)
        pending: Outputs = ([], [], [])
        row = self._write_obs(0)
        acted = [runner.act(row[envs], self.last_episode_starts[envs]) for envs in groups]
        self._send(acted, range(len(groups)))
        for step in range(n_steps):
            last_step = step + 1 == n_steps
            results, acted_early = [], []
            for g, envs in enumerate(groups):
                result = env.recv_group(g)
                results.append(result)
                obs_row = buffer.write_obs(step + 1, result[0], envs)
                if not last_step and g < len(groups) - 1:  # acts for its next step while later groups' envs step
                    acted_early.append(runner.act(obs_row, result[2]))
            outputs: StepOutputs = tuple(th.cat(parts) for parts in zip(*acted))  # type: ignore[assignment]
            actions_np, env_actions = self._env_actions(outputs[0])
            new_obs = buffer.rows["observations"][step + 1]
            rewards, dones = np.concatenate([r[1] for r in results]), np.concatenate([r[2] for r in results])
            infos = [info for result in results for info in result[3]]
            if not self._record_step(step, outputs, pending, actions_np, env_actions, new_obs, rewards, dones, infos):
                return None
            if not last_step:
                self._send(acted_early, range(len(acted_early)))
                envs = groups[-1]
                acted = [*acted_early, runner.act(buffer.obs_rows[step + 1][envs], self.last_episode_starts[envs])]
                self._send(acted[-1:], [len(groups) - 1])
        self.last_obs = np.array(self.last_obs)  # the env's own array, as SB3 keeps it, not a row of the buffer
        return self._finish(n_steps, pending, first_step_times)

    def _send(self, acted: list[StepOutputs], groups: Iterable[int]) -> None:
        """Send each group its actions (``acted[i]`` to group ``groups[i]``)."""
        for outputs, group in zip(acted, groups):
            self.env.send_group(group, self._env_actions(outputs[0])[1])

    def _env_actions(self, actions: th.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """The step's actions as a fresh array (as SB3 gives the env and the callbacks), and as the env takes them
        (Box actions unscaled or clipped to the action space)."""
        actions_np = actions.numpy() if self._on_cpu else actions.cpu().numpy()
        if not self._box:
            return actions_np, actions_np
        policy = self.policy
        if policy.squash_output:
            return actions_np, policy.unscale_action(actions_np)
        return actions_np, np.clip(actions_np, policy.action_space.low, policy.action_space.high)

    def _record_step(
        self,
        step: int,
        outputs: StepOutputs,
        pending: Outputs,
        actions_np: np.ndarray,
        env_actions: np.ndarray,
        new_obs: Any,
        rewards: np.ndarray,
        dones: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> bool:
        """Record env step ``step`` after the env took it: the hooks, episode ends, the rewards (with time-limit
        bootstraps) and episode starts; the policy's outputs are kept in ``pending``. False if ``on_step`` aborts."""
        self.env_steps_taken = step + 1
        for kept, output in zip(pending, outputs):
            kept.append(output)
        on_step, on_episodes_end = self._step_hooks
        if on_step is not None and not on_step(
            {
                "new_obs": new_obs,
                "rewards": rewards,
                "dones": dones,
                "infos": infos,
                "actions": actions_np,
                "clipped_actions": env_actions,
                "values": outputs[1],
                "log_probs": outputs[2],
                "n_steps": step,
            }
        ):
            self.runner.end_rollout(None)
            return False
        # count_nonzero: ndarray.any() goes through a Python wrapper, four times the cost.
        if np.count_nonzero(dones):
            ended = np.flatnonzero(dones)
            if on_episodes_end is not None:
                on_episodes_end([infos[i] for i in ended], dones[ended])
            if self.bootstrap_truncation:
                rewards = self._bootstrap_truncated(rewards, ended, infos)
        arrays = self.buffer.rows
        arrays["rewards"][step] = rewards
        arrays["episode_starts"][step] = self.last_episode_starts
        self.last_obs = new_obs
        self.last_episode_starts = dones
        return True

    def _finish(self, step: int, pending: Outputs, first_step_times: np.ndarray) -> Rollout:
        """The rollout of the ``step`` steps recorded: V(last obs), the policy's outputs written, the episode steps."""
        buffer, runner = self.buffer, self.runner
        buffer.rows["last_dones"][:] = self.last_episode_starts  # the last step's dones
        # V(last obs) reads the observation from the spare row after the rollout's, where there is one.
        last_obs = self._write_obs(step) if step < buffer.capacity else obs_to_tensor(self.last_obs, self.device)
        # Written here, where torch's code is still warm in the cache from the forward: microseconds less.
        last_values = runner.values(last_obs, self.last_episode_starts)
        with th.no_grad():
            buffer.write_last_values(last_values)
            buffer.write_outputs(step - len(pending[0]), pending)
        rollout = buffer.collected(step)
        rollout.first_step_times = th.from_numpy(first_step_times)
        self.episode_steps = _steps_run_after(buffer.rows["episode_starts"][:step], first_step_times)
        runner.end_rollout(rollout)
        return rollout

    def _write_obs(self, step: int) -> Observation:
        """Copy ``last_obs`` into row ``step`` of the buffer and return that row for the policy."""
        row = self.buffer.write_obs(step, self.last_obs)
        return row if self._on_cpu else _map(row, lambda x: x.to(self.device))

    def _bootstrap_truncated(self, rewards: np.ndarray, ended: np.ndarray, infos: list[dict]) -> np.ndarray:
        """Add γ·V(terminal observation) to the reward of episodes cut by a time limit (SB3 #633)."""
        truncated = [
            i
            for i in ended
            if infos[i].get("terminal_observation") is not None and infos[i].get("TimeLimit.truncated", False)
        ]
        if not truncated:
            return rewards
        # One env at a time, as SB3 does: a batched forward could round differently.
        for i in truncated:
            terminal_obs = self.policy.obs_to_tensor(infos[i]["terminal_observation"])[0]
            rewards[i] += self.gamma * self.runner.values(terminal_obs, env_index=i)[0]  # type: ignore[arg-type]
        return rewards


def _steps_run_after(episode_starts: np.ndarray, first_step_times: np.ndarray) -> np.ndarray:
    """Steps each env's episode has run after a rollout (``[T, N]`` episode starts, the ``[N]`` steps run before
    it): counted once per rollout rather than at every step."""
    steps = episode_starts.shape[0]
    started = episode_starts.astype(bool)
    last_start = steps - 1 - np.argmax(started[::-1], axis=0)  # the last row an episode began at (if any)
    return np.where(started.any(axis=0), steps - last_start, first_step_times + steps)
