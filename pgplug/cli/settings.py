"""What a training run is made of: the algorithm, the env and the merged hyperparameters, settled up front.

``pgplug train`` and ``pgplug bc`` both describe the run they want as a :class:`RunRequest`; :func:`settle`
checks it and merges the config entry, the command line's overrides and, for ``-i``, the saved run's
own config into :class:`Settings`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pgplug.cli.models import saved_algorithm
from pgplug.cli.run_folder import find_run_files
from pgplug.contracts.registries import get_host
from pgplug.errors import PgplugError
from pgplug.interop import compat
from pgplug.interop import config as cfg
from pgplug.runtime.algorithm import constructor_parameters
from pgplug.runtime.envs import EnvSpec, check_atari_rom, check_env_id, check_env_kwargs, is_atari

#: What ``config.yml`` records besides the hyperparameters (dropped when ``-i`` reads it back).
RECORD_KEYS = ("seed", "env")


@dataclass
class RunRequest:
    """What the command line asks of a run.

    :param algo: the algorithm's registered name
    :param env: the gymnasium env id
    :param hyperparams: ``key=value`` overrides (YAML values)
    :param conf_file: a config file to read instead of the built-in ``configs/<algo>.yml``
    :param estimator: the estimator's name, overriding the config's
    :param estimator_kwargs: ``key=value`` estimator arguments
    :param n_workers: workers, for algorithms that have them
    :param backend: the worker backend, for algorithms that have them
    :param address: the cluster a backend that joins one (``ray``) joins: ``auto`` or ``HOST:PORT``
    :param n_timesteps: the training budget, overriding the config's
    :param trained_agent: a zip to continue (or, of another algorithm, to warm-start from)
    :param bc_warmstart: an expert zip to clone into the new model first
    :param precision: ``--precision``, overriding the config's ``precision``
    :param vec_env: the ``VecEnv`` type, ``dummy``, ``subproc`` (not for worker algorithms, whose workers are the
        processes) or ``ale`` (Atari ids: one ale-py ``AtariVectorEnv``)
    """

    algo: str
    env: str
    hyperparams: list[str] = field(default_factory=list)
    conf_file: str | None = None
    estimator: str | None = None
    estimator_kwargs: list[str] = field(default_factory=list)
    n_workers: int | None = None
    backend: str | None = None
    address: str | None = None
    n_timesteps: int | None = None
    trained_agent: str | None = None
    bc_warmstart: str | None = None
    vec_env: str = "dummy"
    precision: str | None = None
    #: ``--trust-file``: the ``-i`` and ``--bc-warmstart`` zips may run code when opened
    trust_file: bool = False
    #: ``--env-kwargs``: ``key:value`` arguments of ``gymnasium.make``, replacing the config's ``env_kwargs``
    env_kwargs: list[str] | None = None
    #: ``--eval-env-kwargs``: those of the evaluation envs (default: the training env's)
    eval_env_kwargs: list[str] | None = None
    #: ``--trust-callback``: dotted paths of the config's callbacks to run beyond SB3's, sb3-contrib's and rl_zoo3's
    trusted_callbacks: list[str] = field(default_factory=list)


@dataclass
class Settings:
    """What the command line and the configs decided for one run."""

    cls: type
    env_id: str
    atari: bool
    run_config: cfg.RunConfig
    overrides: dict[str, Any]
    source: str
    trained_agent: Path | None
    #: ``-i`` named another algorithm's zip: a new model starts from its weights
    warm_start: Path | None = None
    #: the algorithm that saved the ``-i`` zip, as :func:`pgplug.interop.compat.detect_algorithm` names it
    source_algorithm: str | None = None
    bc_expert: Path | None = None
    trust_file: bool = False
    #: the ``config.yml`` of the ``-i`` model's run, whose hyperparameters the continued run takes
    recorded_config: Path | None = None


def check_trained_agent(path: str | None) -> Path | None:
    if path is None:
        return None
    trained = Path(path)
    if trained.suffix != ".zip" or not trained.is_file():
        raise PgplugError(f"--trained-agent {path!r} is not a saved model (.zip file)")
    return trained


def base_hyperparams(request: RunRequest, env_id: str, atari: bool, trained: Path | None) -> tuple[dict, str]:
    """The config entry for this run and a description of where it came from."""
    recorded = None if trained is None else find_run_files(trained)  # pgplug's layout or the zoo's
    if recorded is not None and recorded.config_path is not None:
        hyperparams = dict(recorded.config)
        for key in RECORD_KEYS:
            hyperparams.pop(key, None)
        return hyperparams, str(recorded.config_path)
    path = Path(request.conf_file) if request.conf_file else cfg.builtin_config_path(request.algo)
    if path is None:
        return {}, f"no configs/{request.algo}.yml: the algorithm's defaults"
    policy = cfg.parse_assignments(request.hyperparams).get("policy")
    entry, hyperparams = cfg.select_entry(cfg.load_config_file(path), env_id, atari, policy)
    return hyperparams, f"entry {entry!r} of {path}" if entry else f"no entry for {env_id!r} in {path}: defaults"


def command_line_hyperparams(request: RunRequest, cls: type, base: dict[str, Any]) -> dict[str, Any]:
    """``--hyperparams``, ``--estimator``, ``--estimator-kwargs``, ``--precision`` and ``--n-workers`` as
    hyperparameters."""
    overrides = cfg.parse_assignments(request.hyperparams)
    for key, items in (("env_kwargs", request.env_kwargs), ("eval_env_kwargs", request.eval_env_kwargs)):
        if items is not None:  # as in the zoo, the flag replaces the config's mapping
            overrides[key] = cfg.parse_kwargs_flag(items, f"--{key.replace('_', '-')}")
    if request.estimator is not None:
        if request.estimator != base.get("estimator"):
            overrides.setdefault("estimator_kwargs", {})  # the config's kwargs belong to its own estimator
        overrides["estimator"] = request.estimator
    if request.estimator_kwargs:
        kwargs = overrides.get("estimator_kwargs", base.get("estimator_kwargs")) or {}
        if not isinstance(kwargs, dict):
            raise PgplugError(f"estimator_kwargs must be a mapping, got {kwargs!r}")
        overrides["estimator_kwargs"] = {
            **kwargs,
            **cfg.parse_assignments(request.estimator_kwargs, "estimator argument"),
        }
    if request.precision is not None:
        overrides["precision"] = request.precision
    worker_flags = (("--n-workers", "n_workers", request.n_workers), ("--backend", "backend", request.backend))
    for flag, key, value in worker_flags:
        if value is not None:
            check_has_workers(request.algo, cls, flag, key)
            overrides[key] = value
    if request.address is not None:
        check_has_workers(request.algo, cls, "--address", "backend_kwargs")
        backend = overrides.get("backend", base.get("backend", "process"))
        joining = [entry.name for entry in get_host().backends if "address" in constructor_parameters(entry.cls)]
        if backend not in joining:
            raise PgplugError(
                f"--address applies to backends that join a cluster ({', '.join(joining) or 'none'}); "
                f"the backend is {backend!r} (add --backend ray)"
            )
        kwargs = overrides.get("backend_kwargs", base.get("backend_kwargs")) or {}
        if not isinstance(kwargs, dict):
            raise PgplugError(f"backend_kwargs must be a mapping, got {kwargs!r}")
        overrides["backend_kwargs"] = {**kwargs, "address": request.address}
    return overrides


def check_has_workers(algo: str, cls: type, flag: str, key: str) -> None:
    """One line if ``flag`` (constructor argument ``key``) does not apply to ``algo``, naming those it applies to."""
    if key not in cfg.constructor_keys(cls):
        with_workers = [e.name for e in get_host().algorithms if key in cfg.constructor_keys(e.cls)]
        names = ", ".join(with_workers) or "none"
        raise PgplugError(f"{flag} does not apply to {algo}; algorithms with workers: {names}")


def continues(algo: str, source_algorithm: str | None) -> bool:
    """Whether ``algo`` opens a zip of ``source_algorithm`` as its own (same algorithm, or SB3's A2C for a2c)."""
    return source_algorithm in (None, algo) or algo in compat.counterparts_of(source_algorithm)


def class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def source_architecture(cls: type, source: Path, base: dict[str, Any], trust: bool = False) -> dict[str, Any]:
    """``policy`` and ``policy_kwargs`` (as config data) that rebuild ``source``'s policy for ``cls``.

    The config's optimizer settings are kept: the new algorithm trains with its own optimizer.
    """
    policy_class, policy_kwargs = compat.policy_architecture(source, trust=trust)
    aliases = getattr(cls, "policy_aliases", {})
    policy = next((name for name, alias in aliases.items() if alias is policy_class), class_path(policy_class))
    optimizer = {
        k: v for k, v in (base.get("policy_kwargs") or {}).items() if k in ("optimizer_class", "optimizer_kwargs")
    }
    kwargs = {k: class_path(v) if isinstance(v, type) else v for k, v in policy_kwargs.items()}
    return {"policy": policy, "policy_kwargs": {**optimizer, **kwargs}}


def check_bc_expert(path: str | None, trained_agent: str | None, trust: bool = False) -> Path | None:
    if path is None:
        return None
    if trained_agent is not None:
        raise PgplugError("--bc-warmstart clones an expert into a new model, so it cannot be combined with -i")
    expert = Path(path)
    saved_algorithm(expert, trust)
    return expert


def settle(request: RunRequest, require_timesteps: bool = True) -> Settings:
    """Check the command line and merge the hyperparameters, before anything is built.

    :param require_timesteps: fail when neither ``-n`` nor the config gives a training budget
    """
    cls = get_host().algorithms.get(request.algo)
    if request.vec_env == "subproc" and uses_workers(cls):
        raise PgplugError(
            f"--vec-env {request.vec_env} does not apply to {request.algo}: its workers each build their own envs "
            "in their own process; use --vec-env dummy (the default) or ale (Atari)"
        )
    env_id = check_env_id(request.env)
    atari = is_atari(env_id)
    if atari:
        check_atari_rom(env_id)
    trained = check_trained_agent(request.trained_agent)
    source_algorithm = None if trained is None else saved_algorithm(trained, request.trust_file)
    warm_start = None
    if trained is not None and not continues(request.algo, source_algorithm):
        if source_algorithm == "ppo_lstm":
            raise PgplugError(
                f"{trained} is a RecurrentPPO (LSTM) model, which {request.algo} cannot run; "
                "evaluate it with 'pgplug eval' or continue it with sb3-contrib"
            )
        warm_start, trained = trained, None
    bc_expert = check_bc_expert(request.bc_warmstart, request.trained_agent, request.trust_file)
    base, source = base_hyperparams(request, env_id, atari, trained)
    overrides = command_line_hyperparams(request, cls, base)
    if trained is not None and {"policy", "policy_kwargs"} & overrides.keys():
        raise PgplugError("policy and policy_kwargs cannot change when continuing training with -i")
    if warm_start is not None and {"policy", "policy_kwargs"} & overrides.keys():
        raise PgplugError("policy and policy_kwargs come from the -i model when warm-starting from its weights")
    architecture = {} if warm_start is None else source_architecture(cls, warm_start, base, request.trust_file)
    run_config = cfg.prepare(
        cls, {**base, **overrides, **architecture}, request.algo, atari, trusted_callbacks=request.trusted_callbacks
    )
    check_env_kwargs(env_id, run_config.env_kwargs)
    check_env_kwargs(env_id, run_config.eval_env_kwargs or {})
    if request.n_timesteps is not None:
        run_config.n_timesteps = request.n_timesteps
    if run_config.n_timesteps is None and require_timesteps:
        raise PgplugError(f"no n_timesteps for {env_id!r} ({source}); pass -n N")
    estimator = run_config.algorithm_kwargs.get("estimator") or getattr(cls, "default_estimator", None)
    if isinstance(estimator, str) and hasattr(cls, "resolve_estimator"):
        cls.resolve_estimator(estimator, run_config.algorithm_kwargs.get("estimator_kwargs"))
    return Settings(
        cls,
        env_id,
        atari,
        run_config,
        overrides,
        source,
        trained,
        warm_start,
        source_algorithm,
        bc_expert,
        request.trust_file,
        None if trained is None else find_run_files(trained).config_path,
    )


def env_spec(settings: Settings, seed: int | None, vec_env: str = "dummy") -> EnvSpec:
    """The run's env recipe, from the merged hyperparameters."""
    rc = settings.run_config
    return EnvSpec(
        settings.env_id,
        n_envs=rc.n_envs,
        seed=seed,
        frame_stack=rc.frame_stack,
        normalize=rc.normalize,
        wrappers=rc.env_wrappers,
        atari=settings.atari,
        vec_env=vec_env,
        env_kwargs=rc.env_kwargs,
        vec_env_wrappers=rc.vec_env_wrappers,
        monitor_kwargs=rc.monitor_kwargs,
    )


def eval_env_spec(settings: Settings, spec: EnvSpec) -> EnvSpec:
    """The recipe of the evaluation envs: the training env's, with ``eval_env_kwargs`` when given (the zoo's rule)."""
    eval_kwargs = settings.run_config.eval_env_kwargs
    return spec if eval_kwargs is None else replace(spec, env_kwargs=eval_kwargs)


def continuation_note(settings: Settings, statistics: Path | None) -> str | None:
    """What ``-i`` took from the run it continues: its VecNormalize statistics and its recorded config."""
    source = settings.trained_agent or settings.warm_start
    if source is None:
        return None
    taken = [] if statistics is None else [f"VecNormalize statistics from {statistics}"]
    if settings.recorded_config is not None:
        rc = settings.run_config
        recorded = f"n_envs={rc.n_envs}"
        if rc.normalize is not None:
            recorded += " and normalize"
        taken.append(f"{recorded} from {settings.recorded_config}")
    if not taken:
        return None
    return f"{'continuing' if settings.trained_agent is not None else 'warm start'} from {source}: " + ", ".join(taken)


def to_plain(value: Any) -> Any:
    """YAML-safe data: mappings, lists, numbers, strings and None; anything else as its repr."""
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy and torch scalars
        value = value.item()
    return value if value is None or isinstance(value, (bool, int, float, str)) else repr(value)


def saved_config(settings: Settings, model: Any, seed: int) -> dict[str, Any]:
    """The hyperparameters actually used, as plain YAML data (what ``config.yml`` records)."""
    saved = {"env": settings.env_id, **settings.run_config.raw}
    saved["n_envs"] = settings.run_config.n_envs
    saved["n_timesteps"] = settings.run_config.n_timesteps
    estimator = getattr(model, "estimator", None)
    if estimator is not None and hasattr(estimator, "params"):
        saved["estimator"] = estimator.name
        saved["estimator_kwargs"] = estimator.params()
    if getattr(model, "precision", "fp32") != "fp32":  # also where pgplug train chose it (runtime.precision_choice)
        saved.setdefault("precision", model.precision)
    saved["seed"] = seed
    return to_plain(saved)


def uses_workers(cls: type) -> bool:
    """Worker algorithms (A3C) build their envs in each worker from a picklable factory."""
    return "n_workers" in cfg.constructor_keys(cls)
