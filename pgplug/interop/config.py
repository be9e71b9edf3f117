"""Hyperparameter configs: rl-baselines3-zoo style YAML keyed by env id, plus command-line overrides.

Configs are data. Files and ``key=value`` overrides are read with a safe YAML loader; the zoo's
Python-literal strings (``"dict(log_std_init=-2, ortho_init=False)"``) by :mod:`pgplug.interop.literals`,
over an allowlist; schedules (``lin_7e-4``) and class names (``RMSpropTFLike``, ``tanh``,
``package.module.Class``) are turned into objects by explicit rules here, never by ``eval``. The
valid keys are the algorithm's constructor arguments plus the env keys of :data:`ENV_KEYS`, so
plugin algorithms get the same checks as the built-in ones.
"""

from __future__ import annotations

import importlib.resources
import inspect
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from pgplug.errors import PgplugError
from pgplug.files import yaml_text
from pgplug.interop.literals import read_python_literal
from pgplug.runtime.algorithm import check_policy_kwargs
from pgplug.validation import (
    check_constant_learning_rate,
    check_keywords,
    check_positive_int,
    check_timesteps,
    import_dotted,
    keyword_parameters,
)

#: Keys that configure the environment or the run rather than the algorithm's constructor.
ENV_KEYS: tuple[str, ...] = (
    "n_envs",
    "n_timesteps",
    "frame_stack",
    "normalize",
    "env_wrapper",
    "vec_env_wrapper",
    "env_kwargs",
    "eval_env_kwargs",
    "monitor_kwargs",
    "callback",
)
#: Constructor arguments set by their own command-line flags, not by hyperparameters.
FLAG_KEYS: dict[str, str] = {
    "seed": "--seed",
    "verbose": "--verbose",
    "device": "--device",
    "tensorboard_log": "--tensorboard-log",
}
#: Constructor arguments that no config can set.
HIDDEN_KEYS: frozenset[str] = frozenset({"self", "env", "_init_setup_model"})
#: The entry used for every Atari id, and the fallback for ids with no entry of their own.
ATARI_ENTRY, DEFAULT_ENTRY = "atari", "default"
SCHEDULE_KEYS: tuple[str, ...] = ("learning_rate",)


class ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads ``1e-3`` (no dot) as a float, as YAML 1.2 does."""


ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_value(text: str) -> Any:
    """One YAML scalar, list or flow mapping, e.g. ``1e-3``, ``true``, ``[64, 64]``, ``{net_arch: [64]}``."""
    try:
        return yaml_text.load(text, ConfigLoader, f"value {text[:40]!r}")
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise PgplugError(f"cannot parse value {text!r} as YAML: {problem}") from exc


_ASSIGNMENT = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*[=:](.*)$", re.S)


def parse_assignments(items: Iterable[str], what: str = "hyperparameter") -> dict[str, Any]:
    """``["n_steps=8", "policy_kwargs={net_arch: [64, 64]}"]`` → a dict of YAML-parsed values.

    ``key=value`` is pgplug's form; the zoo's ``key:value`` is accepted too.
    """
    parsed: dict[str, Any] = {}
    for item in items:
        match = _ASSIGNMENT.match(item)
        if match is None:
            raise PgplugError(f"{what} {item!r} is not of the form key=value")
        key, text = match.groups()
        parsed[key] = parse_value(text) if text.strip() else None
    return parsed


# -- files ---------------------------------------------------------------------------------------


def builtin_config_path(algo: str) -> Path | None:
    """``configs/<algo>.yml`` shipped as ``pgplug.configs``, or None when the algorithm has none."""
    resource = importlib.resources.files("pgplug.configs") / f"{algo}.yml"
    return Path(str(resource)) if resource.is_file() else None


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """A YAML file whose top level is a mapping (an empty file is an empty mapping)."""
    path = Path(path)
    text = yaml_text.read_text(path, "config file")
    try:
        data = yaml_text.load(text, ConfigLoader, f"config file {str(path)!r}")
    except yaml.YAMLError as exc:
        raise PgplugError(f"config file {str(path)!r} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise PgplugError(f"config file {str(path)!r} must hold a mapping, not {type(data).__name__}")
    return {str(k): v for k, v in data.items()}


def load_config_file(path: str | Path) -> dict[str, dict[str, Any]]:
    """A config file: a mapping of entry name (env id, ``atari``, ``default``) → hyperparameters."""
    data = read_yaml_mapping(path)
    for key, value in data.items():
        if value is not None and not isinstance(value, dict):
            raise PgplugError(f"entry {key!r} of config file {str(path)!r} must be a mapping of hyperparameters")
    return {k: dict(v or {}) for k, v in data.items()}


def select_entry(
    entries: Mapping[str, dict[str, Any]], env_id: str, atari: bool, policy: str | None = None
) -> tuple[str | None, dict[str, Any]]:
    """The entry for ``env_id``: its own, else ``atari`` for an Atari id, else ``default``, else none.

    When the command line asks for a ``policy``, an entry ``<key>/<policy>`` (``atari/CnnLstmPolicy``:
    the paper's A3C LSTM settings) is preferred to ``<key>`` at each step.
    """
    candidates = [env_id, ATARI_ENTRY] if atari else [env_id]
    for key in [*candidates, DEFAULT_ENTRY]:
        for variant in ([f"{key}/{policy}"] if isinstance(policy, str) else []) + [key]:
            if variant in entries:
                return variant, dict(entries[variant])
    return None, {}


# -- keys ----------------------------------------------------------------------------------------


def constructor_keys(cls: type) -> list[str]:
    """The keyword arguments ``cls(...)`` accepts, following ``**kwargs`` up the MRO."""
    return keyword_parameters(cls)[0]


def valid_keys(cls: type) -> list[str]:
    """Every key a config or ``--hyperparams`` may set for algorithm ``cls``."""
    ctor = [k for k in constructor_keys(cls) if k not in HIDDEN_KEYS and k not in FLAG_KEYS]
    return sorted(set(ctor) | set(ENV_KEYS))


def check_keys(cls: type, hyperparams: Mapping[str, Any], algo: str) -> None:
    """Refuse keys the algorithm does not know, naming the key and the valid ones."""
    valid = valid_keys(cls)
    for key in hyperparams:
        if key in FLAG_KEYS:
            raise PgplugError(f"{key!r} is set with {FLAG_KEYS[key]}, not as a hyperparameter")
        if key not in valid:
            raise PgplugError(f"unknown hyperparameter {key!r} for {algo}; valid keys: {', '.join(valid)}")


# -- values --------------------------------------------------------------------------------------


def positive_int(key: str, value: Any) -> int:
    """A positive integer; YAML's ``1e5`` (a float) counts when it is whole."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return check_positive_int(key, value)


def linear_schedule(initial_value: float):
    """The zoo's ``lin_<x>``: x · progress_remaining, from x at the start to 0 at the end (picklable)."""
    from stable_baselines3.common.utils import LinearSchedule

    return LinearSchedule(start=initial_value, end=0.0, end_fraction=1.0)


def parse_schedule(key: str, value: Any) -> Any:
    """A number stays a number; ``lin_<x>`` becomes a linear schedule starting at x."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        kind, _, number = value.partition("_")
        initial = parse_value(number) if number else None
        if kind == "lin" and isinstance(initial, (int, float)) and not isinstance(initial, bool):
            return linear_schedule(check_constant_learning_rate(f"{key} {value!r}'s initial value", initial))
    if callable(value):
        return value
    raise PgplugError(f"{key} must be a number or a linear schedule such as 'lin_7e-4', got {value!r}")


def _torch_aliases() -> dict[str, dict[str, str]]:
    return {
        "activation_fn": {
            "tanh": "torch.nn.Tanh",
            "relu": "torch.nn.ReLU",
            "elu": "torch.nn.ELU",
            "leaky_relu": "torch.nn.LeakyReLU",
            "gelu": "torch.nn.GELU",
            "silu": "torch.nn.SiLU",
            "sigmoid": "torch.nn.Sigmoid",
        },
        "optimizer_class": {
            "RMSpropTFLike": "stable_baselines3.common.sb2_compat.rmsprop_tf_like.RMSpropTFLike",
            "RMSprop": "torch.optim.RMSprop",
            "Adam": "torch.optim.Adam",
            "AdamW": "torch.optim.AdamW",
            "SGD": "torch.optim.SGD",
        },
        "features_extractor_class": {
            "NatureCNN": "stable_baselines3.common.torch_layers.NatureCNN",
            "FlattenExtractor": "stable_baselines3.common.torch_layers.FlattenExtractor",
            "CombinedExtractor": "stable_baselines3.common.torch_layers.CombinedExtractor",
        },
    }


#: Short class names accepted in ``policy_kwargs``; anything else must be a dotted import path.
CLASS_ALIASES: dict[str, dict[str, str]] = _torch_aliases()
_CLASS_BASES: dict[str, str] = {
    "activation_fn": "torch.nn.Module",
    "optimizer_class": "torch.optim.Optimizer",
    "features_extractor_class": "stable_baselines3.common.torch_layers.BaseFeaturesExtractor",
    "policy": "stable_baselines3.common.policies.BasePolicy",
    "env_wrapper": "gymnasium.Wrapper",
    "vec_env_wrapper": "stable_baselines3.common.vec_env.VecEnvWrapper",
    "callback": "stable_baselines3.common.callbacks.BaseCallback",
}


def resolve_class(key: str, value: Any) -> type:
    """The class a config names for ``key``: a short name from :data:`CLASS_ALIASES` or a dotted path.

    The class must derive from the base the key expects (e.g. ``torch.nn.Module`` for
    ``activation_fn``), so a config cannot smuggle in an arbitrary callable.
    """
    base = import_dotted(_CLASS_BASES[key])
    if isinstance(value, type):
        cls = value
    elif isinstance(value, str):
        aliases = CLASS_ALIASES.get(key, {})
        lowered = {name.lower(): target for name, target in aliases.items()}
        target = aliases.get(value) or lowered.get(value.lower())
        if target is None and "." not in value:
            names = ", ".join(aliases) or "(none)"
            raise PgplugError(f"unknown {key} {value!r}; short names: {names}, or a dotted path 'package.module.Class'")
        cls = import_dotted(target or value)
    else:
        raise PgplugError(f"{key} must be a class name or a dotted path, got {value!r}")
    if not isinstance(cls, type) or not issubclass(cls, base):
        raise PgplugError(f"{key} {value!r} is not a subclass of {_CLASS_BASES[key]}")
    return cls


#: The modules a zoo string names classes of (``nn.ReLU``, ``th.optim.Adam``), with the key whose base they need.
LITERAL_MODULES: dict[str, str] = {"torch.nn": "activation_fn", "torch.optim": "optimizer_class"}
#: Packages whose classes a zoo string may name by their full path.
LITERAL_PACKAGES: tuple[str, ...] = ("stable_baselines3", "sb3_contrib")
#: Groups of :data:`CLASS_ALIASES` whose short names a zoo string may use as names (``RMSpropTFLike``).
LITERAL_ALIAS_GROUPS: tuple[str, ...] = ("optimizer_class", "features_extractor_class")
LITERAL_NAMES = (
    "nn.X / th.nn.X activations, th.optim.X optimizers, "
    + ", ".join(sorted(name for group in LITERAL_ALIAS_GROUPS for name in CLASS_ALIASES[group]))
    + ", or a class of stable_baselines3.* / sb3_contrib.*"
)


def literal_class(name: str) -> type:
    """The class a name in a zoo string stands for (``nn``/``th`` already expanded: ``torch.nn.ReLU``).

    Allowed: torch.nn modules (``nn.ReLU``, ``th.nn.Tanh``), torch.optim optimizers (``th.optim.Adam``), the class
    names of :data:`CLASS_ALIASES` (``RMSpropTFLike``, ``NatureCNN``, ...) and classes of SB3 and sb3-contrib by
    their full path. Anything else is refused, naming what is allowed.
    """
    module = name.rpartition(".")[0]
    if module in LITERAL_MODULES:
        return resolve_class(LITERAL_MODULES[module], name)
    for key in LITERAL_ALIAS_GROUPS:
        if name in CLASS_ALIASES[key]:
            return resolve_class(key, name)
    if module and name.split(".")[0] in LITERAL_PACKAGES:
        cls = import_dotted(name)
        if isinstance(cls, type):
            return cls
        raise PgplugError(f"{name!r} is not a class; allowed names: {LITERAL_NAMES}")
    raise PgplugError(f"name {name!r} is not allowed; allowed names: {LITERAL_NAMES}")


def read_config_string(key: str, value: Any, names: bool = False) -> Any:
    """A zoo Python-literal string (``"dict(norm_obs=True)"``) as data; any other value as it is.

    :param names: allow class names (:func:`literal_class`), as ``policy_kwargs`` needs; otherwise data only
    """
    if not isinstance(value, str):
        return value
    return read_python_literal(value, key, literal_class if names else None)


def resolve_policy_kwargs(value: Any) -> dict[str, Any]:
    """``policy_kwargs`` with its class names (``activation_fn``, ``optimizer_class``, ...) resolved.

    The zoo's Python-literal form (``"dict(log_std_init=-2, ortho_init=False)"``) is read safely too.
    """
    value = read_config_string("policy_kwargs", value, names=True)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PgplugError(
            f"policy_kwargs must be a mapping such as {{net_arch: [64, 64], activation_fn: tanh}}, got {value!r}"
        )
    return {k: resolve_class(k, v) if k in _CLASS_BASES else v for k, v in value.items()}


#: Where the classes a config's ``callback`` names may come from without ``--trust-callback``.
CALLBACK_PACKAGES: tuple[str, ...] = ("stable_baselines3.", "sb3_contrib.", "rl_zoo3.callbacks.")
#: The argument each kind of class gets from pgplug rather than from the config.
_PASSED_BY_PGPLUG: dict[str, tuple[str, ...]] = {"env_wrapper": ("env",), "vec_env_wrapper": ("venv",), "callback": ()}


def parse_class_list(key: str, value: Any) -> tuple[tuple[str, dict[str, Any]], ...]:
    """The zoo's ``env_wrapper``/``vec_env_wrapper``/``callback``: a dotted path, ``{path: kwargs}``, or a list of
    them, in order. Paths stay strings (checked by :func:`check_class_arguments` where they are used), so an env
    spec carrying them pickles anywhere.
    """
    if value is None:
        return ()
    items = value if isinstance(value, list) else [value]
    classes: list[tuple[str, dict[str, Any]]] = []
    for item in items:
        if isinstance(item, str):
            path, kwargs = item, {}
        elif isinstance(item, dict) and len(item) == 1:
            path, kwargs = next(iter(item.items()))
            kwargs = kwargs or {}
        else:
            path, kwargs = None, None
        if not isinstance(path, str) or not isinstance(kwargs, dict):
            raise PgplugError(f"{key} must be a dotted class path, {{path: kwargs}} or a list, got {item!r}")
        classes.append((path, dict(kwargs)))
    return tuple(classes)


def parse_env_wrappers(value: Any, key: str = "env_wrapper") -> tuple[tuple[str, dict[str, Any]], ...]:
    """The zoo's ``env_wrapper`` (gymnasium wrappers) or ``vec_env_wrapper`` (SB3 vec-env wrappers), checked."""
    wrappers = parse_class_list(key, value)
    for path, kwargs in wrappers:
        check_class_arguments(key, path, kwargs)
    return wrappers


def parse_callbacks(value: Any, trusted: Iterable[str] = ()) -> tuple[tuple[str, dict[str, Any]], ...]:
    """The zoo's ``callback``: SB3's, sb3-contrib's and rl_zoo3's callbacks, and those the user names as trusted.

    Any other path is refused before it is imported (importing a module runs its code).
    """
    callbacks = parse_class_list("callback", value)
    trusted = set(trusted)
    for path, kwargs in callbacks:
        if not path.startswith(CALLBACK_PACKAGES) and path not in trusted:
            raise PgplugError(
                f"callback {path!r} is not one of {', '.join(p + '*' for p in CALLBACK_PACKAGES)}; "
                f"to run your own, name it on the command line: --trust-callback {path}"
            )
        check_class_arguments("callback", path, kwargs)
    return callbacks


def build_callbacks(callbacks: Iterable[tuple[str, dict[str, Any]]]) -> list[Any]:
    """The callbacks :func:`parse_callbacks` checked, constructed with their config arguments."""
    built = []
    for path, kwargs in callbacks:
        try:
            built.append(import_dotted(path)(**kwargs))
        except (TypeError, ValueError, AssertionError) as exc:
            raise PgplugError(f"callback {path} with {kwargs} failed: {str(exc).splitlines()[0]}") from exc
    return built


def check_class_arguments(key: str, path: str, kwargs: dict[str, Any]) -> None:
    """Refuse arguments the class at ``path`` does not take, and missing required ones, naming them."""
    cls = resolve_class(key, path)
    passed = _PASSED_BY_PGPLUG.get(key, ())
    check_keywords(f"{key} argument", cls, kwargs, reserved=passed)
    try:
        inspect.signature(cls).bind(*[None] * len(passed), **kwargs)
    except TypeError as exc:
        raise PgplugError(f"{key} {path}: {exc}") from None
    except ValueError:  # no signature to check against: the class is built as it is
        pass


def check_wrapper_arguments(path: str, kwargs: dict[str, Any]) -> None:
    """Refuse arguments the ``env_wrapper`` class at ``path`` does not take, and missing required ones."""
    check_class_arguments("env_wrapper", path, kwargs)


def parse_kwargs_value(key: str, value: Any) -> dict[str, Any]:
    """``env_kwargs``/``monitor_kwargs``: a mapping, or the zoo's Python-literal string of one (data only)."""
    value = read_config_string(key, value)
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise PgplugError(f"{key} must be a mapping such as {{max_episode_steps: 100}}, got {value!r}")
    return dict(value)


def check_monitor_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``monitor_kwargs``: keyword arguments of SB3's ``Monitor`` other than the env and its file."""
    from stable_baselines3.common.monitor import Monitor

    check_keywords("monitor_kwargs key", Monitor, kwargs, reserved=("env", "filename"))
    return dict(kwargs)


_WORD = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-/]*$")


def parse_kwargs_flag(items: Iterable[str], what: str) -> dict[str, Any]:
    """The zoo's ``--env-kwargs max_episode_steps:100 render_mode:'human'`` (``key=value`` too).

    Values are Python literals read as data (:func:`pgplug.interop.literals.read_python_literal`: numbers,
    quoted strings, True/False/None, lists, dicts); a bare word (``rgb_array``, ``true``) is read as YAML.
    """
    parsed: dict[str, Any] = {}
    for item in items:
        match = _ASSIGNMENT.match(item)
        if match is None:
            raise PgplugError(f"{what} {item!r} is not of the form key:value")
        key, text = match.groups()
        text = text.strip()
        parsed[key] = parse_value(text) if _WORD.match(text) else read_python_literal(text, f"{what} {key}")
    return parsed


def parse_normalize(value: Any, gamma: float | None) -> dict[str, Any] | None:
    """``normalize``: false/None → None; true → ``{}``; a mapping (or the zoo's Python-literal string of one) →
    VecNormalize keyword arguments.

    As in the zoo, VecNormalize discounts rewards with the algorithm's ``gamma`` unless told otherwise.
    """
    if value is None or value is False:
        return None
    if value is True:
        kwargs: dict[str, Any] = {}
    elif isinstance(value, dict):
        kwargs = dict(value)
    elif isinstance(value, str):  # the zoo's "{'norm_obs': True, 'norm_reward': False}" or "dict(norm_obs=True)"
        return parse_normalize(read_python_literal(value, "normalize"), gamma)
    else:
        raise PgplugError(f"normalize must be true, false or a mapping such as {{norm_reward: false}}, got {value!r}")
    valid = ["norm_obs", "norm_reward", "clip_obs", "clip_reward", "gamma", "epsilon", "norm_obs_keys"]
    for key in kwargs:
        if key not in valid:
            raise PgplugError(f"unknown normalize option {key!r}; valid options: {', '.join(valid)}")
    if gamma is not None:
        kwargs.setdefault("gamma", gamma)
    return kwargs


# -- the whole -----------------------------------------------------------------------------------


@dataclass
class EnvKeys:
    """A config's env keys, checked and converted: what builds the env of a run (``train``) or of its
    evaluation (``eval``), so both read a run's ``config.yml`` the same way.

    :param frame_stack: frames ``VecFrameStack`` stacks, or None
    :param normalize: ``VecNormalize`` keyword arguments, or None for no normalization
    :param env_wrappers: gymnasium wrappers ``(dotted path, kwargs)``, applied after ``Monitor``
    :param vec_env_wrappers: SB3 vec-env wrappers, applied as the zoo does: before VecNormalize and frame stack
    :param env_kwargs: keyword arguments of ``gymnasium.make``
    :param eval_env_kwargs: those of the evaluation envs (default: ``env_kwargs``, as in the zoo)
    :param monitor_kwargs: keyword arguments of SB3's ``Monitor``
    """

    frame_stack: int | None = None
    normalize: dict[str, Any] | None = None
    env_wrappers: tuple[tuple[str, dict[str, Any]], ...] = ()
    vec_env_wrappers: tuple[tuple[str, dict[str, Any]], ...] = ()
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    eval_env_kwargs: dict[str, Any] | None = None
    monitor_kwargs: dict[str, Any] = field(default_factory=dict)


def frame_stack_value(value: Any) -> int | None:
    """``frame_stack``: 0, 1, false or None stack nothing."""
    return None if value in (None, 0, 1, False) else positive_int("frame_stack", value)


def read_env_keys(raw: Mapping[str, Any], atari: bool = False) -> EnvKeys:
    """The env keys of merged hyperparameters or of a saved ``config.yml`` (ours or the zoo's)."""
    eval_env_kwargs = raw.get("eval_env_kwargs")
    return EnvKeys(
        frame_stack=frame_stack_value(raw.get("frame_stack", 4 if atari else None)),
        normalize=parse_normalize(raw.get("normalize"), raw.get("gamma")),
        env_wrappers=parse_env_wrappers(raw.get("env_wrapper")),
        vec_env_wrappers=parse_env_wrappers(raw.get("vec_env_wrapper"), "vec_env_wrapper"),
        env_kwargs=parse_kwargs_value("env_kwargs", raw.get("env_kwargs")),
        eval_env_kwargs=None if eval_env_kwargs is None else parse_kwargs_value("eval_env_kwargs", eval_env_kwargs),
        monitor_kwargs=check_monitor_kwargs(parse_kwargs_value("monitor_kwargs", raw.get("monitor_kwargs"))),
    )


@dataclass(kw_only=True)
class RunConfig(EnvKeys):
    """Merged hyperparameters split into what builds the env (the :class:`EnvKeys`) and what builds the algorithm.

    :param raw: the merged hyperparameters as plain data (what ``config.yml`` records)
    :param algorithm_kwargs: constructor arguments, with schedules and classes resolved
    :param callbacks: the config's ``callback`` classes ``(dotted path, kwargs)``, checked
    """

    raw: dict[str, Any]
    algorithm_kwargs: dict[str, Any] = field(default_factory=dict)
    n_timesteps: int | None = None
    n_envs: int = 1
    callbacks: tuple[tuple[str, dict[str, Any]], ...] = ()


def aliases_of(cls: type) -> dict[str, type]:
    """The algorithm's policy names (SB3's ``policy_aliases``: ``MlpPolicy`` → its class)."""
    return getattr(cls, "policy_aliases", {})


def prepare(
    cls: type, hyperparams: Mapping[str, Any], algo: str, atari: bool = False, trusted_callbacks: Iterable[str] = ()
) -> RunConfig:
    """Check the merged hyperparameters of ``algo`` and convert them into a :class:`RunConfig`.

    :param trusted_callbacks: dotted paths of ``callback`` classes the user allows beyond SB3's, sb3-contrib's and
        rl_zoo3's (``--trust-callback``)

    The algorithm's settings (``n_steps``, ``gamma``, ``ent_coef``, ...) are checked here by the algorithm's own
    rules (its ``check_settings``, which its constructor applies too), and ``policy_kwargs`` against the policy
    class, so a bad value is refused in the constructor's words before any env is built.
    """
    check_keys(cls, hyperparams, algo)
    raw = dict(hyperparams)
    kwargs = {k: v for k, v in raw.items() if k not in ENV_KEYS}
    raw.setdefault("policy", "CnnPolicy" if atari else "MlpPolicy")
    kwargs.setdefault("policy", raw["policy"])
    policy = kwargs["policy"]
    if isinstance(policy, str) and "." in policy:
        kwargs["policy"] = resolve_class("policy", policy)
    elif isinstance(policy, str):
        aliases = aliases_of(cls)
        if aliases and policy not in aliases:
            raise PgplugError(f"unknown policy {policy!r}; valid policies: {', '.join(aliases)} or a dotted path")
    else:
        raise PgplugError(f"policy must be a policy name or a dotted class path, got {policy!r}")
    if "policy_kwargs" in kwargs:
        kwargs["policy_kwargs"] = resolve_policy_kwargs(kwargs["policy_kwargs"])
        policy_class = kwargs["policy"] if isinstance(kwargs["policy"], type) else aliases_of(cls).get(policy)
        if policy_class is not None:
            check_policy_kwargs(policy_class, kwargs["policy_kwargs"])
    for key in SCHEDULE_KEYS:
        if key in kwargs:
            kwargs[key] = parse_schedule(key, kwargs[key])
    if hasattr(cls, "check_settings"):  # the algorithm's own rules, before anything is built
        cls.check_settings(kwargs)
    if kwargs.get("estimator_kwargs") is not None and not isinstance(kwargs["estimator_kwargs"], dict):
        raise PgplugError(
            f"estimator_kwargs must be a mapping such as {{gae_lambda: 0.95}}, got {raw['estimator_kwargs']!r}"
        )
    n_timesteps = raw.get("n_timesteps")
    env = read_env_keys(raw, atari)
    return RunConfig(
        raw=raw,
        algorithm_kwargs=kwargs,
        n_timesteps=None if n_timesteps is None else check_timesteps("n_timesteps", n_timesteps),
        n_envs=positive_int("n_envs", raw.get("n_envs", 1)),
        callbacks=parse_callbacks(raw.get("callback"), trusted_callbacks),
        **{f.name: getattr(env, f.name) for f in fields(EnvKeys)},
    )
