"""A run's folder: where a model is saved with the files that record how it was trained, and reading them back.

pgplug keeps ``config.yml`` and ``vecnormalize.pkl`` next to the model zip; rl-baselines3-zoo keeps them
(and ``args.yml``) in ``<run>/<env>/``. Both layouts are read.
"""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from stable_baselines3.common.callbacks import CheckpointCallback

from pgplug.errors import PgplugError
from pgplug.files import yaml_text
from pgplug.files.atomic import atomic_write

VECNORMALIZE_FILE = "vecnormalize.pkl"
#: The hyperparameters a run used, saved next to its model (read back by ``-i`` and ``eval``).
CONFIG_FILE = "config.yml"
ZOO_ARGS_FILE = "args.yml"


class RecordLoader(yaml.SafeLoader):
    """A safe YAML loader that also reads the zoo's ``config.yml``/``args.yml`` as plain data.

    The zoo dumps ``OrderedDict``s (``!!python/object/apply:collections.OrderedDict``) and tuples;
    these become dicts and lists. Any other ``!!python/...`` object becomes None: nothing is constructed.
    """


def _ordered_dict(loader: yaml.Loader, suffix: str, node: yaml.Node) -> Any:
    if suffix == "object/apply:collections.OrderedDict" and isinstance(node, yaml.SequenceNode):
        (pairs,) = loader.construct_sequence(node, deep=True) or [[]]
        return {str(k): v for k, v in pairs}
    if suffix == "tuple" and isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return None


RecordLoader.add_multi_constructor("tag:yaml.org,2002:python/", _ordered_dict)


def read_record(path: Path) -> dict[str, Any]:
    try:
        data = yaml_text.load(yaml_text.read_text(path, "run record"), RecordLoader, str(path))
    except PgplugError:
        raise
    except (OSError, yaml.YAMLError, ValueError, TypeError) as exc:
        raise PgplugError(f"cannot read {path}: {str(exc).splitlines()[0]}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise PgplugError(f"{path} must hold a mapping, not {type(data).__name__}")
    return {str(k): v for k, v in data.items()}


@dataclass
class RunFiles:
    """What a model's run folder records about its env.

    :param config: the hyperparameters of ``config.yml`` (empty without one)
    :param config_path: that file
    :param vecnormalize: the ``VecNormalize`` statistics saved with the model
    :param env_id: the env id recorded by pgplug (``config.yml``) or the zoo (``args.yml``)
    :param env_kwargs: the zoo's recorded ``env_kwargs``
    """

    config: dict[str, Any] = field(default_factory=dict)
    config_path: Path | None = None
    vecnormalize: Path | None = None
    env_id: str | None = None
    env_kwargs: dict[str, Any] = field(default_factory=dict)


def find_run_files(model_path: Path) -> RunFiles:
    """The files saved with ``model_path``: next to it (pgplug) or in ``<run>/<env>/`` (rl-baselines3-zoo).

    A checkpoint ``rl_model_<N>_steps.zip`` takes ``rl_model_vecnormalize_<N>_steps.pkl`` when there is one.
    """
    for folder in (model_path.parent, model_path.parent / model_path.stem):
        if (folder / CONFIG_FILE).is_file() or (folder / VECNORMALIZE_FILE).is_file():
            break
    else:
        return RunFiles()
    files = RunFiles()
    if (folder / CONFIG_FILE).is_file():
        files.config_path = folder / CONFIG_FILE
        files.config = read_record(files.config_path)
        files.env_id = files.config.get("env") if isinstance(files.config.get("env"), str) else None
    if (folder / ZOO_ARGS_FILE).is_file():
        zoo_args = read_record(folder / ZOO_ARGS_FILE)
        if files.env_id is None and isinstance(zoo_args.get("env"), str):
            files.env_id = zoo_args["env"]
        if isinstance(zoo_args.get("env_kwargs"), dict):
            files.env_kwargs = dict(zoo_args["env_kwargs"])
    checkpoint = re.fullmatch(r"rl_model_(\d+)_steps", model_path.stem)
    stats = [folder / f"rl_model_vecnormalize_{checkpoint.group(1)}_steps.pkl"] if checkpoint else []
    stats.append(folder / VECNORMALIZE_FILE)
    files.vecnormalize = next((path for path in stats if path.is_file()), None)
    return files


def new_run_dir(log_folder: str | Path, algo: str, name: str) -> Path:
    """``<log_folder>/<algo>/<name>_<k>`` with k one more than the highest existing run."""
    base = Path(log_folder) / algo
    pattern = re.compile(rf"{re.escape(name)}_(\d+)")
    existing = [int(m.group(1)) for p in base.glob("*") if (m := pattern.fullmatch(p.name))] if base.is_dir() else []
    run = max(existing, default=0) + 1
    while True:
        run_dir = base / f"{name}_{run}"
        try:
            run_dir.mkdir(parents=True)
            return run_dir
        except FileExistsError:
            run += 1


def save_model(model: Any, run_dir: Path, name: str) -> Path:
    """The model as ``<name>.zip`` and its VecNormalize statistics as ``vecnormalize.pkl``, both atomically."""
    path = run_dir / f"{name}.zip"
    model.save(path)
    vec_normalize = model.get_vec_normalize_env()
    if vec_normalize is not None:
        save_vecnormalize(vec_normalize, run_dir / VECNORMALIZE_FILE)
    return path


def save_vecnormalize(vec_normalize: Any, path: Path) -> None:
    """What ``VecNormalize.save`` writes (a pickle SB3 and the zoo read), but never a torn file."""
    with atomic_write(path) as file:
        pickle.dump(vec_normalize, file)


class AtomicCheckpointCallback(CheckpointCallback):
    """SB3's ``CheckpointCallback``, whose VecNormalize statistics are written atomically too (the zip already is:
    it goes through the model's ``save``)."""

    def _on_step(self) -> bool:
        keep, self.save_vecnormalize = self.save_vecnormalize, False
        try:
            result = super()._on_step()
        finally:
            self.save_vecnormalize = keep
        vec_normalize = self.model.get_vec_normalize_env()
        if keep and vec_normalize is not None and self.n_calls % self.save_freq == 0:
            save_vecnormalize(vec_normalize, Path(self._checkpoint_path("vecnormalize_", extension="pkl")))
        return result
