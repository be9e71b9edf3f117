"""The one switch for every speed path, what runs when it is off, and fast paths that engage only where proven.

With ``PGPLUG_FAST_PATHS=0`` (``fast_paths=False``, ``--no-fast-paths``) the rollout calls SB3's own
``policy.forward``, the update ``evaluate_actions`` and ``Optimizer.step``, ``predict`` ``policy.predict``.
With them on, a fast path runs only for the configurations it is written for and falls back otherwise.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy

import pgplug
from pgplug.cli import main
from pgplug.errors import PgplugError
from pgplug.fast.categorical import sample_categorical, sample_categorical_array
from pgplug.fast.direct_forward import logits_and_values, mlp_modules
from pgplug.fast.fused_mlp import FusedActorCritic
from pgplug.runtime.fast_runners import FastRunner
from pgplug.runtime.policy_runner import PolicyRunner
from pgplug.runtime.runners import FAST_PATHS_ENV_VAR, fast_paths_from_env


@pytest.fixture
def sb3_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter]:
    """Counts the calls of SB3's own policy and optimizer methods that the fast paths replace."""
    calls: Counter = Counter()
    for owner, name in (
        (ActorCriticPolicy, "forward"),
        (ActorCriticPolicy, "evaluate_actions"),
        (ActorCriticPolicy, "predict_values"),
        (BasePolicy, "set_training_mode"),
        (th.optim.RMSprop, "step"),
    ):
        original = getattr(owner, name)

        def counted(*args: Any, _original: Any = original, _name: str = name, **kwargs: Any) -> Any:
            calls[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(owner, name, counted)
    yield calls


# -- the switch ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "on"), [("", True), ("1", True), ("on", True), ("0", False), ("False", False)])
def test_the_environment_variable(monkeypatch: pytest.MonkeyPatch, value: str, on: bool) -> None:
    monkeypatch.setenv(FAST_PATHS_ENV_VAR, value)
    assert fast_paths_from_env() is on
    assert pgplug.A2C("MlpPolicy", "CartPole-v1").runner.fast is on


def test_a_bad_switch_value_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FAST_PATHS_ENV_VAR, "maybe")
    with pytest.raises(PgplugError, match=r"PGPLUG_FAST_PATHS='maybe' is neither on \(1, true, on, yes\)") as error:
        pgplug.A2C("MlpPolicy", "CartPole-v1")
    assert "\n" not in str(error.value)
    monkeypatch.delenv(FAST_PATHS_ENV_VAR)
    with pytest.raises(PgplugError, match="fast_paths must be True, False or None"):
        pgplug.A2C("MlpPolicy", "CartPole-v1", fast_paths="no")


def test_the_constructor_argument_wins_and_is_not_saved(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(FAST_PATHS_ENV_VAR, "1")
    model = pgplug.A2C("MlpPolicy", "CartPole-v1", fast_paths=False)
    assert type(model.runner) is PolicyRunner
    model.fast_paths = True
    assert type(model.runner) is FastRunner  # the runner follows the setting
    model.fast_paths = False
    model.save(tmp_path / "model.zip")
    assert pgplug.A2C.load(tmp_path / "model.zip").runner.fast  # this process's choice, not the file's
    assert not pgplug.A2C.load(tmp_path / "model.zip", fast_paths=False).runner.fast


# -- what runs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "reference"])
def test_with_the_switch_off_sb3s_own_code_runs(sb3_calls: Counter, fast: bool) -> None:
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    model = pgplug.A2C("MlpPolicy", env, n_steps=5, seed=0, fast_paths=fast)
    model.learn(30)  # 3 updates of 5 steps
    model.predict(env.reset())
    if fast:  # the fused MLP, the categorical formulas, the functional RMSprop, the training flags set directly
        assert sb3_calls == {"step": 1}  # RMSprop's first step creates its state: that one is step()'s
    else:  # per update: 5 forwards, V(last obs), evaluate_actions, a step; eval mode, train mode; predict's eval mode
        assert sb3_calls == {
            "forward": 15,
            "predict_values": 3,
            "evaluate_actions": 3,
            "step": 3,
            "set_training_mode": 7,
        }


def test_a_fast_path_steps_aside_for_a_forward_hook(sb3_calls: Counter) -> None:
    """A hook on the policy is SB3 behaviour the fused MLP would skip: the policy is then run as it is."""
    model = pgplug.A2C("MlpPolicy", "CartPole-v1", n_steps=5, seed=0)
    hooked: list[int] = []
    model.policy.register_forward_hook(lambda module, args, output: hooked.append(1))
    model.learn(10)
    assert len(hooked) == 10 and sb3_calls["forward"] == 10


# -- the fused actor-critic MLP, over SB3's net_arch forms -----------------------------------------

NET_ARCHS: dict[str, Any] = {
    "default": None,
    "shared-list": [32, 32],
    "asymmetric-width": {"pi": [8], "vf": [16]},
    "asymmetric-depth": {"pi": [8, 8], "vf": [16]},
    "critic-only-hidden": {"pi": [], "vf": [16]},
    "no-hidden": [],
    "old-list-of-dict": [{"vf": [8], "pi": [4]}],
}


@pytest.mark.parametrize("net_arch", NET_ARCHS.values(), ids=NET_ARCHS.keys())
def test_every_net_arch_trains_and_the_fused_forward_equals_sb3s(net_arch: Any) -> None:
    policy_kwargs = {} if net_arch is None else {"net_arch": net_arch}
    model = pgplug.A2C("MlpPolicy", "CartPole-v1", seed=0, policy_kwargs=policy_kwargs)
    model.learn(256)
    policy = model.policy
    fused = FusedActorCritic.of(policy)
    extractor = policy.mlp_extractor
    same_depth = len(extractor.policy_net) == len(extractor.value_net)
    assert (fused is not None) == same_depth  # stacks of unequal depth run as they are
    if fused is None:
        return
    obs = th.as_tensor(np.random.default_rng(0).normal(size=(16, 4)), dtype=th.float32)
    with th.no_grad():
        logits, values = fused(policy.extract_features(obs))
        latent_pi, latent_vf = policy.mlp_extractor(policy.extract_features(obs))
        th.testing.assert_close(logits, policy.action_net(latent_pi))
        th.testing.assert_close(values, policy.value_net(latent_vf))
        # The rollout's numpy forward on the same fused weights: equal up to float32 rounding.
        features = policy.extract_features(obs)
        assert fused.runs_in_numpy(features)
        logits_array, values_array = fused.numpy_forward(features.numpy())
        th.testing.assert_close(th.from_numpy(logits_array), logits)
        th.testing.assert_close(th.from_numpy(values_array), values)


def test_the_numpy_forward_serves_only_small_float32_batches_outside_autograd() -> None:
    policy = pgplug.A2C("MlpPolicy", "CartPole-v1", seed=0).policy
    fused = FusedActorCritic.of(policy)
    assert fused is not None
    rows = fused.NUMPY_MAX_WORK // (128 * 128)  # the 64-64 MLP's largest fused weight is 128 x 128
    assert fused.runs_in_numpy(th.zeros(rows, 4))
    assert not fused.runs_in_numpy(th.zeros(rows + 1, 4))  # numpy's BLAS could take a second thread
    assert not fused.runs_in_numpy(th.zeros(8, 4, dtype=th.float64))
    assert not fused.runs_in_numpy(th.zeros(8, 4, requires_grad=True))


def test_the_numpy_draw_takes_torchs_generator_and_the_same_actions() -> None:
    """sample_categorical_array draws what sample_categorical draws from the same generator state."""
    logits = th.randn(2000, 5, generator=th.Generator().manual_seed(0)) * 3
    th.manual_seed(7)
    actions, log_probs = sample_categorical(logits)
    th.manual_seed(7)
    array_actions, array_log_probs = sample_categorical_array(logits.numpy())
    assert th.equal(array_actions, actions)
    th.testing.assert_close(array_log_probs, log_probs)
    assert array_actions.dtype == th.int64 and array_log_probs.dtype == th.float32


# -- the command line -----------------------------------------------------------------------------


def test_the_command_line_switch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sb3_calls: Counter) -> None:
    monkeypatch.delenv(FAST_PATHS_ENV_VAR, raising=False)
    args = ["train", "--algo", "a2c", "--env", "CartPole-v1", "-n", "40", "-f", str(tmp_path), "--seed", "0"]
    assert main([*args, "--eval-freq", "-1", "--n-eval-episodes", "0", "--no-progress", "--no-fast-paths"]) == 0
    assert sb3_calls["evaluate_actions"] > 0 and sb3_calls["step"] > 0
    assert FAST_PATHS_ENV_VAR not in os.environ  # set for the command only


def fused_afresh_after(policy: Any, replace: Any) -> th.Tensor:
    """``replace`` a module of ``policy``: the fused MLP is built anew and computes what SB3's modules do now.
    Returns the observations it was checked on."""
    before = FusedActorCritic.of(policy)
    replace(policy)
    after = FusedActorCritic.of(policy)
    assert after is not None and after is not before
    obs = th.zeros(3, 4)
    with th.no_grad():
        latent_pi, _ = policy.mlp_extractor(policy.extract_features(obs))
        th.testing.assert_close(after(policy.extract_features(obs))[0], policy.action_net(latent_pi))
    return obs


def test_a_replaced_head_is_fused_afresh() -> None:
    policy = pgplug.A2C("MlpPolicy", "CartPole-v1", seed=0).policy
    fused_afresh_after(policy, lambda p: setattr(p, "action_net", th.nn.Linear(64, 2)))


# -- the direct forward: SB3's modules' ops without module calls ------------------------------------

DIRECT_FORMS: dict[str, dict[str, Any]] = {
    **{name: {} if arch is None else {"net_arch": arch} for name, arch in NET_ARCHS.items()},
    "relu": {"activation_fn": th.nn.ReLU},
    "separate-extractors": {"share_features_extractor": False, "net_arch": {"pi": [8], "vf": [16]}},
}


@pytest.mark.parametrize("policy_kwargs", DIRECT_FORMS.values(), ids=DIRECT_FORMS.keys())
def test_the_direct_forward_equals_sb3s_bitwise_gradients_included(policy_kwargs: dict[str, Any]) -> None:
    policy = pgplug.A2C("MlpPolicy", "CartPole-v1", seed=0, policy_kwargs=policy_kwargs).policy
    obs = th.as_tensor(np.random.default_rng(0).normal(size=(16, 4)), dtype=th.float32)
    actions = th.arange(16) % 2

    def loss_and_grads(values: th.Tensor, log_prob: th.Tensor) -> tuple[th.Tensor, list[th.Tensor]]:
        loss = values.square().mean() - log_prob.mean()
        return loss, list(th.autograd.grad(loss, list(policy.parameters())))

    logits, values = logits_and_values(policy, obs)
    loss, grads = loss_and_grads(values.flatten(), th.log_softmax(logits, dim=-1)[th.arange(16), actions])
    sb3_values, sb3_log_prob, _ = policy.evaluate_actions(obs, actions)
    sb3_loss, sb3_grads = loss_and_grads(sb3_values.flatten(), sb3_log_prob)
    th.testing.assert_close(loss, sb3_loss, rtol=1e-6, atol=1e-7)  # Categorical normalises with another kernel
    for grad, sb3_grad in zip(grads, sb3_grads):
        th.testing.assert_close(grad, sb3_grad, rtol=1e-5, atol=1e-6)
    with th.no_grad():  # and the forward op for op: bitwise
        latent_pi, latent_vf = (
            policy.mlp_extractor(policy.extract_features(obs))
            if policy_kwargs.get("share_features_extractor", True)
            else (
                policy.mlp_extractor.forward_actor(policy.extract_features(obs)[0]),
                policy.mlp_extractor.forward_critic(policy.extract_features(obs)[1]),
            )
        )
        assert th.equal(logits, policy.action_net(latent_pi)) and th.equal(values, policy.value_net(latent_vf))


HOOKS: dict[str, Any] = {
    "forward": lambda module, calls: module.register_forward_hook(lambda *args: calls.append(1)),
    "forward-pre": lambda module, calls: module.register_forward_pre_hook(lambda *args: calls.append(1)),
    "backward": lambda module, calls: module.register_full_backward_hook(lambda *args: calls.append(1)),
}


#: Where a hook goes, and which kinds fire there (nothing upstream of the observations needs a gradient).
HOOKED_MODULES = {"first-actor-layer": HOOKS, "action-head": HOOKS, "features-flatten": ("forward", "forward-pre")}


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")  # torch's note: the observations need no gradient
@pytest.mark.parametrize(
    ("where", "hook"),
    [
        pytest.param(where, HOOKS[kind], id=f"{where}-{kind}")
        for where, kinds in HOOKED_MODULES.items()
        for kind in kinds
    ],
)
def test_a_hook_on_an_inner_module_runs_as_often_as_under_sb3s_code(where: str, hook: Any) -> None:
    """The fused and the direct forward call no module: a hook on any of them makes them step aside."""
    counts = {}
    for fast in (True, False):
        env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
        model = pgplug.A2C("MlpPolicy", env, n_steps=5, seed=0, fast_paths=fast)
        policy = model.policy
        module = {
            "first-actor-layer": policy.mlp_extractor.policy_net[0],
            "action-head": policy.action_net,
            "features-flatten": policy.features_extractor.flatten,
        }[where]
        calls: list[int] = []
        hook(module, calls)
        model.learn(30)
        counts[fast] = len(calls)
    assert counts[True] == counts[False] > 0


def test_a_replaced_inner_layer_is_run_and_fused_afresh() -> None:
    policy = pgplug.A2C("MlpPolicy", "CartPole-v1", seed=0).policy
    obs = fused_afresh_after(policy, lambda p: p.mlp_extractor.policy_net.__setitem__(0, th.nn.Linear(4, 64)))
    with th.no_grad():
        latent_pi, _ = policy.mlp_extractor(policy.extract_features(obs))
        assert th.equal(logits_and_values(policy, obs)[0], policy.action_net(latent_pi))
    policy.mlp_extractor.policy_net[1] = th.nn.GELU()  # not a layer the direct forward runs: SB3's modules run
    assert mlp_modules(policy) is None and FusedActorCritic.of(policy) is None
    with th.no_grad():
        latent_pi, _ = policy.mlp_extractor(policy.extract_features(obs))
        assert th.equal(logits_and_values(policy, obs)[0], policy.action_net(latent_pi))
