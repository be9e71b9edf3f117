"""Build SB3 files that really reference the old ``gym`` package, for the compatibility tests.

Models saved by SB3 1.x with OpenAI ``gym`` pickle their spaces as ``gym.spaces.box.Box`` etc., and
rl-baselines3-zoo models pickle schedule objects of modules that may be missing where the file is
opened. :func:`build_gym_era_files` recreates such files without installing ``gym``: in a
subprocess it puts a stand-in ``gym`` package (spaces that subclass gymnasium's and pickle the
legacy gym state: ``shape``/``np_random`` keys, no ``start``/``low_repr``) and a stand-in
``legacy_zoo`` schedule module on ``sys.path``, trains small SB3 A2C and PPO models, swaps their
spaces and schedules for the stand-ins, saves them with a ``VecNormalize``, and records the
predictions the original objects make. The test process, where neither module exists, then
compares.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

STANDIN_MODULES = ("gym", "legacy_zoo")

_GYM_SPACE_MODULE = '''
"""Stand-in for OpenAI gym 0.21's gym.spaces.{module}: gymnasium's class, pickled with gym's path and state."""
import gymnasium.spaces


class {name}(gymnasium.spaces.{name}):
    def __getstate__(self):
        state = dict(self.__dict__)
        state["shape"] = state.pop("_shape")
        state["np_random"] = None
        for key in ("_np_random", "start", "low_repr", "high_repr"):
            state.pop(key, None)
        return state
'''

_LEGACY_ZOO = '''
"""Stand-in for a training script's schedule module (rl-baselines3-zoo style), absent where files are opened."""


class LinearSchedule:
    def __init__(self, initial_value):
        self.initial_value = initial_value

    def __call__(self, progress_remaining):
        return progress_remaining * self.initial_value
'''

_SCRIPT = """
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
sys.path.insert(0, str(out / "standin"))

import gymnasium
import numpy as np
import torch as th
import gym.spaces
import legacy_zoo

th.set_num_threads(1)
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecNormalize

assert gym.spaces.Box.__module__ == "gym.spaces.box"


def to_gym(space):
    if isinstance(space, gymnasium.spaces.Box):
        return gym.spaces.Box(space.low, space.high, dtype=space.dtype)
    return gym.spaces.Discrete(int(space.n))


def probabilities(model, obs):
    with th.no_grad():
        dist = model.policy.get_distribution(model.policy.obs_to_tensor(obs)[0])
    return dist.distribution.probs.numpy()


rng = np.random.default_rng(0)
obs = rng.uniform(-0.5, 0.5, size=(32, 4)).astype(np.float32)
record = {"obs": obs.tolist()}

a2c = A2C("MlpPolicy", make_vec_env("CartPole-v1", n_envs=4, seed=0), n_steps=8, seed=0, device="cpu")
a2c.learn(1_000)
ppo = PPO("MlpPolicy", make_vec_env("CartPole-v1", n_envs=2, seed=0), n_steps=64, batch_size=64, n_epochs=2,
          seed=0, device="cpu")
ppo.learn(256)
ppo.learning_rate = legacy_zoo.LinearSchedule(3e-4)
ppo.lr_schedule = legacy_zoo.LinearSchedule(3e-4)
ppo.clip_range = legacy_zoo.LinearSchedule(0.25)

for name, model in (("a2c", a2c), ("ppo", ppo)):
    model.observation_space = to_gym(model.observation_space)
    model.action_space = to_gym(model.action_space)
    model.save(out / f"gym_era_{name}.zip")
    record[f"{name}_actions"] = model.predict(obs, deterministic=True)[0].tolist()
    record[f"{name}_probs"] = probabilities(model, obs).tolist()

venv = VecNormalize(make_vec_env("CartPole-v1", n_envs=2, seed=0))
venv.reset()
for _ in range(50):
    venv.step(np.array([venv.action_space.sample() for _ in range(2)]))
venv.observation_space = to_gym(venv.observation_space)
venv.action_space = to_gym(venv.action_space)
venv.save(str(out / "gym_era_vecnormalize.pkl"))
record["normalized_obs"] = venv.normalize_obs(obs).tolist()
(out / "expected.json").write_text(json.dumps(record))
"""


def write_standin_packages(root: Path) -> Path:
    """Write the stand-in ``gym`` package and ``legacy_zoo`` module under ``root/standin``."""
    standin = root / "standin"
    (standin / "gym" / "spaces").mkdir(parents=True, exist_ok=True)
    (standin / "gym" / "__init__.py").write_text('"""Stand-in for OpenAI gym."""\n__version__ = "0.21.0"\n')
    (standin / "gym" / "spaces" / "__init__.py").write_text(
        "from gym.spaces.box import Box\nfrom gym.spaces.discrete import Discrete\n"
    )
    for module, name in (("box", "Box"), ("discrete", "Discrete")):
        source = _GYM_SPACE_MODULE.replace("{module}", module).replace("{name}", name)
        (standin / "gym" / "spaces" / f"{module}.py").write_text(textwrap.dedent(source))
    (standin / "legacy_zoo.py").write_text(textwrap.dedent(_LEGACY_ZOO))
    return standin


def build_gym_era_files(root: Path) -> dict[str, np.ndarray]:
    """Write ``gym_era_a2c.zip``, ``gym_era_ppo.zip`` and ``gym_era_vecnormalize.pkl`` into ``root``.

    Returns what the original objects computed on ``obs``: deterministic actions, action
    probabilities and normalized observations.
    """
    write_standin_packages(root)
    subprocess.run([sys.executable, "-c", _SCRIPT, str(root)], check=True, capture_output=True, text=True)
    expected = json.loads((root / "expected.json").read_text())
    return {key: np.asarray(value) for key, value in expected.items()}
