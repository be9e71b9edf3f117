"""``precision="bf16"``: the policy's body under bfloat16 autocast, trained by every algorithm, close to float32.

bfloat16 keeps about three significant digits, so comparisons with float32 have margins (a few percent), and
nothing here depends on the CPU having AMX or AVX-512 BF16: autocast runs bfloat16 on any x86-64 CPU.
"""

from __future__ import annotations

import json
import zipfile
from typing import Any

import numpy as np
import pytest
import stable_baselines3 as sb3
import torch as th
from test_rollout_graph import SMALL_CNN, image_env

import pgplug
from pgplug.cli import main
from pgplug.contracts.registries import make_objective
from pgplug.errors import PgplugError
from pgplug.runtime.fast_runners import Bf16Runner, FastRunner
from pgplug.runtime.gradient import compute_gradients
from pgplug.runtime.runners import runner_for

CNN = {"policy_kwargs": SMALL_CNN}


def make(algo: str, env: str, precision: str = "bf16", **kwargs: Any) -> Any:
    """A small model of ``algo`` on CartPole (MlpPolicy) or the noisy-image env (CnnPolicy)."""
    policy, env_or_id = ("CnnPolicy", image_env(False)) if env == "image" else ("MlpPolicy", "CartPole-v1")
    extra = CNN if env == "image" else {}
    if algo == "a3c":
        if env == "image":
            env_or_id = image_env_factory
        return pgplug.A3C(
            policy, env_or_id, backend="serial", n_workers=1, n_envs_per_worker=2, t_max=5, seed=0,
            precision=precision, **extra, **kwargs,
        )  # fmt: skip
    cls = {"a2c": pgplug.A2C, "reinforce": pgplug.REINFORCE}[algo]
    steps = {"n_steps": 5} if algo == "a2c" else {}
    return cls(policy, env_or_id, seed=0, device="cpu", precision=precision, **steps, **extra, **kwargs)


def image_env_factory(n_envs: int, seed: int | None) -> Any:
    """A3C's env factory for the noisy-image env, channels first as SB3's algorithms wrap an env of images."""
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecTransposeImage
    from test_rollout_graph import NoisyImages

    return VecTransposeImage(make_vec_env(NoisyImages, n_envs=n_envs, seed=seed or 0))


def flat_params(model: Any) -> th.Tensor:
    return th.cat([p.detach().flatten() for p in model.policy.parameters()])


@pytest.mark.parametrize("env", ["cartpole", "image"])
@pytest.mark.parametrize("algo", ["a2c", "reinforce", "a3c"])
def test_bf16_trains_every_algorithm(algo: str, env: str) -> None:
    """A few updates in bf16: the weights move, stay float32 and finite, and the runner is the bf16 one."""
    model = make(algo, env)
    before = flat_params(model)
    model.learn(60 if algo != "reinforce" else 200)
    after = flat_params(model)
    assert model.precision == "bf16" and model.num_timesteps >= 60
    assert after.dtype == th.float32 and bool(th.isfinite(after).all()) and not th.equal(after, before)
    if algo != "a3c":  # A3C's driver does not run the policy; its workers do (the spec carries the precision)
        assert isinstance(model.runner, Bf16Runner) and not model.runner.keep_graph
    state = model.policy.optimizer.state
    assert state and all(t.dtype == th.float32 for s in state.values() for t in s.values() if th.is_tensor(t))


@pytest.mark.parametrize("env", ["cartpole", "image"])
def test_bf16_gradients_are_close_to_fp32_on_a_fixed_batch(env: str) -> None:
    """The same rollout, the same weights: bf16's loss and gradient within bfloat16's margins of float32's,
    its outputs float32, and not bitwise float32's (the bf16 arithmetic did run)."""
    model = make("a2c", env, precision="fp32")
    model.learn(20)  # warm: weights off their initial values
    rollout = model.last_rollout
    assert rollout is not None and rollout.advantages is not None
    objective = make_objective("policy_gradient", {"ent_coef": 0.01, "vf_coef": 0.5})
    params = list(model.policy.parameters())
    results = {}
    for name, runner in (("fp32", runner_for(model.policy, fast=True)), ("bf16", Bf16Runner(model.policy))):
        batch = runner.evaluate_rollout(rollout, differentiate_entropy=True)
        terms = compute_gradients(runner, objective, rollout, params, max_grad_norm=None)
        grads = th.cat([p.grad.flatten() for p in params])
        results[name] = (batch.evaluation, terms.loss.detach(), grads)
    (ev32, loss32, g32), (ev16, loss16, g16) = results["fp32"], results["bf16"]
    assert isinstance(runner_for(model.policy, fast=True), FastRunner)
    for a, b in ((ev16.values, ev32.values), (ev16.log_prob, ev32.log_prob), (ev16.entropy, ev32.entropy)):
        assert a.dtype == th.float32
        scale = float(b.detach().abs().max()) + 1e-3
        assert float((a - b).detach().abs().max()) <= 0.03 * scale + 1e-3
    assert abs(float(loss16 - loss32)) <= 0.03 * abs(float(loss32)) + 1e-3
    cosine = float(th.nn.functional.cosine_similarity(g16, g32, dim=0))
    assert cosine > 0.99, cosine
    assert 0.95 < float(g16.norm() / g32.norm()) < 1.05
    assert not th.equal(ev16.values, ev32.values)


def test_bf16_rollout_steps_match_fp32_within_margins() -> None:
    """The rollout's step forward in bf16: the same action distribution (log-probs) and V(s) within margins."""
    model = make("a2c", "image", precision="fp32")
    obs = model.policy.obs_to_tensor(model.env.reset())[0]
    fp32, bf16 = runner_for(model.policy, fast=True), Bf16Runner(model.policy)
    actions, values16, log_prob16 = bf16.act(obs, np.ones(len(obs), bool))
    with th.no_grad():
        ref_values, ref_log_prob, _ = model.policy.evaluate_actions(obs, actions)
    assert values16.dtype == log_prob16.dtype == th.float32
    th.testing.assert_close(values16.flatten(), ref_values.flatten(), rtol=0.03, atol=0.02)
    th.testing.assert_close(log_prob16, ref_log_prob, rtol=0.03, atol=0.02)
    th.testing.assert_close(bf16.values(obs).flatten(), fp32.values(obs).flatten(), rtol=0.03, atol=0.02)


def test_save_load_records_precision_and_stays_sb3_loadable(tmp_path) -> None:
    """The zip records the precision; pgplug loads it back in bf16, SB3 loads it; predict is float32 everywhere."""
    model = make("a2c", "image")
    model.learn(20)
    path = tmp_path / "bf16.zip"
    model.save(path)
    with zipfile.ZipFile(path) as archive:
        assert json.loads(archive.read("data"))["precision"] == "bf16"
    loaded = pgplug.A2C.load(path, env=image_env(False))
    assert loaded.precision == "bf16" and isinstance(loaded.runner, Bf16Runner)
    theirs = sb3.A2C.load(path, device="cpu")
    obs = image_env(False, seed=3).reset()
    expected, _ = model.predict(obs, deterministic=True)
    for other in (loaded, theirs):
        actions, _ = other.predict(obs, deterministic=True)
        np.testing.assert_array_equal(actions, expected)
    loaded.learn(10, reset_num_timesteps=False)  # trains on, in bf16
    assert loaded.num_timesteps == 30


def test_bad_precision_is_one_line() -> None:
    with pytest.raises(PgplugError, match=r"^precision must be one of fp32, bf16, got 'fp16'$"):
        pgplug.A2C("MlpPolicy", "CartPole-v1", precision="fp16")
    model = make("a2c", "cartpole", precision="fp32")
    model.precision = "half"
    with pytest.raises(PgplugError, match=r"^precision must be one of fp32, bf16, got 'half'$"):
        model.learn(10)


@pytest.mark.parametrize("command", ["train", "bc"])
def test_cli_bad_precision_is_one_line(command: str, tmp_path, capsys, plugin_host) -> None:
    args = ["train", "--algo", "a2c", "--env", "CartPole-v1", "--no-progress"] if command == "train" else [
        "bc", "--expert", str(tmp_path / "expert.zip"), "--env", "CartPole-v1"
    ]  # fmt: skip
    assert main([*args, "--precision", "bad", "-f", str(tmp_path / "logs")]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("pgplug: error: argument --precision: precision must be one of fp32, bf16, got 'bad'")


def test_config_key_precision_is_checked(tmp_path, capsys, plugin_host) -> None:
    config = tmp_path / "a2c.yml"
    config.write_text("CartPole-v1:\n  n_timesteps: 100\n  policy: MlpPolicy\n  precision: bf32\n")
    args = ["train", "--algo", "a2c", "--env", "CartPole-v1", "--no-progress", "-conf", str(config)]
    assert main([*args, "-f", str(tmp_path / "logs")]) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("pgplug: error: precision must be one of fp32, bf16, got 'bf32'")


def test_cli_trains_in_bf16_from_the_flag_and_the_config(tmp_path, capsys, plugin_host) -> None:
    config = tmp_path / "a2c.yml"
    config.write_text("CartPole-v1:\n  n_timesteps: 80\n  policy: MlpPolicy\n  n_envs: 2\n  precision: bf16\n")
    common = ["train", "--algo", "a2c", "--env", "CartPole-v1", "--no-progress", "--num-threads", "1"]
    common += ["--n-eval-episodes", "0", "--eval-freq", "-1", "--seed", "0"]
    for extra, expected in (([], "bf16"), (["--precision", "fp32"], "fp32")):
        logs = tmp_path / f"logs_{expected}"
        assert main([*common, "-conf", str(config), *extra, "-f", str(logs)]) == 0, capsys.readouterr().err
        (zip_path,) = logs.glob("a2c/*/CartPole-v1.zip")
        assert pgplug.A2C.load(zip_path).precision == expected


def test_bf16_needs_the_fast_paths(tmp_path, monkeypatch) -> None:
    """The speed paths off: training in bf16 is refused in one line; a bf16 model still loads and predicts."""
    with pytest.raises(PgplugError, match=r"^precision='bf16' is one of pgplug's speed paths, which are off"):
        make("a2c", "cartpole", fast_paths=False)
    model = make("a2c", "cartpole")
    model.learn(10)
    model.save(tmp_path / "m.zip")
    monkeypatch.setenv("PGPLUG_FAST_PATHS", "0")
    with pytest.raises(PgplugError, match=r"^precision='bf16' is one of pgplug's speed paths"):
        make("reinforce", "cartpole")
    loaded = pgplug.A2C.load(tmp_path / "m.zip", env=model.env)
    obs = model.env.reset()
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])
    with pytest.raises(PgplugError, match=r"^precision='bf16' is one of pgplug's speed paths"):
        loaded.learn(10)
    with pytest.raises(PgplugError, match=r"^precision='bf16' is one of pgplug's speed paths"):
        runner_for(model.policy, fast=False, precision="bf16")


def test_bf16_refuses_policies_it_cannot_split() -> None:
    """Recurrent policies (and policies with their own forward passes) are refused in one line, naming fp32."""
    model = pgplug.A2C("MlpLstmPolicy", "CartPole-v1", n_steps=4, seed=0, precision="bf16")
    with pytest.raises(
        PgplugError, match=r"^precision='bf16' runs SB3's own ActorCriticPolicy .* use precision='fp32'"
    ):
        model.learn(8)
