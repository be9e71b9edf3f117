"""A run's folder: where a model is saved with the files that record how it was trained, and reading them back.

pgplug keeps ``config.yml`` and ``vecnormalize.pkl`` next to the model zip; rl-baselines3-zoo keeps them
(and ``args.yml``, ``command.txt``) in ``<run>/<env>/``. ``pgplug train`` writes both layouts, so the zoo's
``enjoy`` and ``record_video`` play a pgplug run; both layouts are read. pgplug's ``config.yml`` stays plain YAML
(any safe loader reads it, and ``-i`` does); the zoo's holds an ``OrderedDict`` tag, as the zoo's own does.
"""

from __future__ import annotations

import pickle
import re
import sys
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from stable_baselines3.common.callbacks import CheckpointCallback

from pgplug.errors import PgplugError
from pgplug.files import yaml_text
from pgplug.files.atomic import atomic_write
from pgplug.runtime.envs import ATARI_WRAPPER, EnvSpec, run_name

VECNORMALIZE_FILE = "vecnormalize.pkl"
#: The hyperparameters a run used, saved next to its model (read back by ``-i`` and ``eval``).
CONFIG_FILE = "config.yml"
ZOO_ARGS_FILE = "args.yml"
ZOO_COMMAND_FILE = "command.txt"


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


def zoo_params_folder(run_dir: Path, env_id: str) -> Path:
    """``<run>/<env>/``: where the zoo keeps a run's ``config.yml``, ``args.yml``, ``vecnormalize.pkl``."""
    return run_dir / run_name(env_id)


def zoo_env_keys(spec: EnvSpec) -> dict[str, Any]:
    """The env pipeline as the zoo's ``create_test_env`` rebuilds it: ``env_wrapper`` (SB3's ``AtariWrapper``
    first for Atari ids, as pgplug applies it), ``frame_stack`` and the ``gym.make`` keyword arguments."""
    wrappers = [(ATARI_WRAPPER, {})] if spec.atari else []
    wrappers += [w for w in spec.wrappers if not (spec.atari and w[0] == ATARI_WRAPPER)]
    keys: dict[str, Any] = {
        "env_wrapper": [path if not kwargs else {path: dict(kwargs)} for path, kwargs in wrappers] or None,
        "frame_stack": spec.frame_stack or None,
        "env_kwargs": spec.make_kwargs() or None,
    }
    return {key: value for key, value in keys.items() if value is not None}


def _yaml_bytes(data: Any) -> bytes:
    """YAML as the zoo writes it (``yaml.dump``: an ``OrderedDict`` becomes a tagged list of pairs)."""
    return yaml.dump(data, encoding="utf-8")


def write_run_record(run_dir: Path, config: dict[str, Any], spec: EnvSpec, command_line: dict[str, Any]) -> None:
    """Record how a run was made, in both layouts, each file atomically.

    - pgplug's ``config.yml`` next to the model: ``config`` as plain YAML;
    - the zoo's ``<run>/<env>/``: ``config.yml`` (``config`` with the env keys of :func:`zoo_env_keys`, an
      ``OrderedDict`` sorted by key, as ``ExperimentManager._save_config`` writes it), ``args.yml`` (the command
      line's ``Namespace``, sorted, with ``env_kwargs`` as the zoo's ``enjoy`` reads it) and ``command.txt``.

    :param command_line: the parsed command line as plain YAML data
    """
    with atomic_write(run_dir / CONFIG_FILE) as file:
        file.write(yaml.safe_dump(config, sort_keys=True, encoding="utf-8"))
    params = zoo_params_folder(run_dir, spec.env_id)
    params.mkdir(parents=True, exist_ok=True)
    zoo_config = {**config, **zoo_env_keys(spec)}
    zoo_config.pop("seed", None)
    zoo_config.pop("env", None)
    with atomic_write(params / CONFIG_FILE) as file:
        file.write(_yaml_bytes(OrderedDict(sorted(zoo_config.items()))))
    namespace = dict(command_line)
    namespace["env"] = spec.env_id
    namespace["env_kwargs"] = zoo_env_keys(spec).get("env_kwargs")
    with atomic_write(params / ZOO_ARGS_FILE) as file:
        file.write(_yaml_bytes(OrderedDict(sorted(namespace.items()))))
    with atomic_write(params / ZOO_COMMAND_FILE) as file:
        file.write(" ".join(getattr(sys, "orig_argv", [sys.executable, *sys.argv])).encode())


def zoo_params_folders(run_dir: Path) -> list[Path]:
    """The zoo's ``<run>/<env>/`` folders of a run (those holding an ``args.yml``)."""
    return sorted(path.parent for path in run_dir.glob(f"*/{ZOO_ARGS_FILE}"))


def save_model(model: Any, run_dir: Path, name: str) -> Path:
    """The model as ``<name>.zip`` and its VecNormalize statistics as ``vecnormalize.pkl``, all atomically.

    The statistics go next to the zip (pgplug's layout) and into the run's ``<run>/<env>/`` (the zoo's).
    """
    path = run_dir / f"{name}.zip"
    model.save(path)
    vec_normalize = model.get_vec_normalize_env()
    if vec_normalize is not None:
        for folder in (run_dir, *zoo_params_folders(run_dir)):
            save_vecnormalize(vec_normalize, folder / VECNORMALIZE_FILE)
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


# -- finding a run's model, as the zoo's enjoy does ----------------------------------------------

BEST_MODEL_FILE = "best_model.zip"
CHECKPOINT = re.compile(r"rl_model_(\d+)_steps\.zip")


def run_ids(algo_folder: Path, env_id: str) -> list[int]:
    """The ids ``N`` of the runs ``<algo_folder>/<env>_<N>`` (rl_zoo3's ``get_latest_run_id`` takes the highest)."""
    pattern = re.compile(rf"{re.escape(run_name(env_id))}_(\d+)")
    if not algo_folder.is_dir():
        return []
    return sorted(int(m.group(1)) for p in algo_folder.iterdir() if p.is_dir() and (m := pattern.fullmatch(p.name)))


def checkpoints(run_dir: Path) -> dict[int, Path]:
    """The run's ``rl_model_<steps>_steps.zip`` checkpoints by step count, in order."""
    found = {int(m.group(1)): p for p in run_dir.glob("rl_model_*_steps.zip") if (m := CHECKPOINT.fullmatch(p.name))}
    return dict(sorted(found.items()))


def find_run(folder: Path, algo: str, env_id: str, exp_id: int = 0) -> Path:
    """``<folder>/<algo>/<env>_<exp_id>`` (0: the latest run, a negative id: ``<folder>/<algo>`` itself), as
    rl_zoo3's ``get_model_path`` resolves it; one line naming the runs there when there is no such run."""
    algo_folder = folder / algo
    ids = run_ids(algo_folder, env_id)
    if exp_id < 0:
        run_dir = algo_folder
    elif exp_id == 0 and not ids:
        raise PgplugError(
            f"no run of {algo} on {env_id} in {algo_folder} (no {run_name(env_id)}_<N> folder there); "
            f"train one with 'pgplug train --algo {algo} --env {env_id} -f {folder}'"
        )
    else:
        run_dir = algo_folder / f"{run_name(env_id)}_{exp_id or max(ids)}"
    if not run_dir.is_dir():
        there = ", ".join(str(i) for i in ids) or "none"
        raise PgplugError(f"no run {run_dir}; --exp-id of the {algo} runs on {env_id} there: {there}")
    return run_dir


def find_model(
    run_dir: Path,
    env_id: str,
    load_best: bool = False,
    load_checkpoint: int | None = None,
    load_last_checkpoint: bool = False,
) -> Path:
    """The run's final model ``<env>.zip``, its ``best_model.zip``, checkpoint ``N`` or last checkpoint."""
    kept = checkpoints(run_dir)
    listed = ", ".join(str(steps) for steps in kept) or "none (train with --save-freq N)"
    if load_best:
        path = run_dir / BEST_MODEL_FILE
        if not path.is_file():
            raise PgplugError(
                f"no best model in {run_dir} ({BEST_MODEL_FILE} is kept by the periodic evaluation: "
                "train with --eval-freq N)"
            )
        return path
    if load_checkpoint is not None:
        if load_checkpoint not in kept:
            raise PgplugError(f"no checkpoint {load_checkpoint} in {run_dir}; checkpoints there: {listed}")
        return kept[load_checkpoint]
    if load_last_checkpoint:
        if not kept:
            raise PgplugError(f"no checkpoint in {run_dir}; checkpoints there: {listed}")
        return kept[max(kept)]
    path = run_dir / f"{run_name(env_id)}.zip"
    if not path.is_file():
        models = ", ".join(sorted(p.name for p in run_dir.glob("*.zip"))) or "none"
        raise PgplugError(f"no model {path}; models there: {models}")
    return path
