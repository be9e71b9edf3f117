"""Plugin discovery: built-ins through the hooks, installed entry points, local files and modules,
clashes, blocking, load-time errors, and the examples of ``docs/writing-plugins.md``.

Every test starts from and returns to a clean process-wide host (``reset_host()``), and removes
what it put on ``sys.path`` and in ``sys.modules``.
"""

from __future__ import annotations

import ast
import inspect
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch as th

import pgplug
from pgplug import A2C, PgplugError, hookimpl
from pgplug.contracts.registries import BUILTIN_PLUGINS, get_host, make_estimator, reset_host
from pgplug.contracts.registries import Host as PluginHost
from pgplug.errors import IncompatibleEstimatorError, PluginClashError, UnknownNameError
from pgplug.plugin import hookspecs
from pgplug.plugin.host import (
    BUILTIN_SOURCE,
    DISABLE_ENV_VAR,
    ENTRY_POINT_GROUP,
    PLUGINS_ENV_VAR,
)
from pgplug.plugins.estimators import GAE

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "docs" / "examples"
PACKAGE = EXAMPLES / "pgplug_clipped_gae"
MY_ESTIMATOR = EXAMPLES / "my_estimator.py"
MY_ALGORITHM = EXAMPLES / "my_algorithm.py"
DOCS = ROOT / "docs" / "writing-plugins.md"
FIXTURES = Path(__file__).resolve().parent / "plugin_fixtures"
BUILTIN_ESTIMATORS = {"full_return", "reward_to_go", "baseline", "td", "nstep", "gae"}


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """No plugin environment variables, and a fresh process-wide host before and after."""
    monkeypatch.delenv(PLUGINS_ENV_VAR, raising=False)
    monkeypatch.delenv(DISABLE_ENV_VAR, raising=False)
    reset_host()
    yield monkeypatch
    reset_host()


@pytest.fixture
def host(clean_env: pytest.MonkeyPatch) -> PluginHost:
    """The process-wide host, built fresh for this test."""
    return get_host()


def install_without_pip(package_dir: Path, site: Path) -> str:
    """Install a plugin distribution as pip would lay it out: the module plus a ``*.dist-info`` with
    ``METADATA`` and ``entry_points.txt`` read from its ``pyproject.toml``. Returns the distribution name."""
    pyproject = tomllib.loads((package_dir / "pyproject.toml").read_text())
    project = pyproject["project"]
    name, version = project["name"], project["version"]
    dist_info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    entry_points = project["entry-points"][ENTRY_POINT_GROUP]
    lines = [f"[{ENTRY_POINT_GROUP}]", *(f"{ep} = {target}" for ep, target in entry_points.items())]
    (dist_info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    for module in pyproject["tool"]["setuptools"]["py-modules"]:
        shutil.copy(package_dir / f"{module}.py", site)
    return name


@pytest.fixture
def site(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> Iterator[Path]:
    """A site directory on ``sys.path`` in which the example ``pgplug-clipped-gae`` is installed."""
    site = tmp_path / "site"
    install_without_pip(PACKAGE, site)
    clean_env.syspath_prepend(str(site))
    yield site
    sys.modules.pop("pgplug_clipped_gae", None)


@pytest.fixture
def installed(site: Path) -> PluginHost:
    """The process-wide host, built while ``pgplug-clipped-gae`` is installed."""
    return get_host()


class RolloutRecorder:
    """A throw-away plugin that keeps what ``pgplug_after_rollout`` shows it."""

    def __init__(self) -> None:
        self.advantages: list[th.Tensor] = []
        self.returns: list[th.Tensor] = []

    @hookimpl
    def pgplug_after_rollout(self, rollout) -> None:
        self.advantages.append(rollout.advantages.clone())
        self.returns.append(rollout.returns.clone())


def random_rollout(seed: int, steps: int = 9, n_envs: int = 3) -> dict:
    """A random rollout with episode boundaries and a critic, scaled so that |GAE| often exceeds 1."""
    rng = np.random.default_rng(seed)
    starts = rng.random((steps, n_envs)) < 0.25
    starts[0] = True
    return dict(
        rewards=rng.normal(0, 3, (steps, n_envs)),
        values=rng.normal(0, 3, (steps, n_envs)),
        episode_starts=starts.astype(np.float32),
        last_values=rng.normal(0, 3, n_envs),
        last_dones=(rng.random(n_envs) < 0.5).astype(np.float32),
        gamma=0.9,
    )


def run_pgplug(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """``python -m pgplug ARGS`` in a subprocess with a wide terminal and no inherited plugin variables."""
    base = {k: v for k, v in os.environ.items() if k not in (PLUGINS_ENV_VAR, DISABLE_ENV_VAR)}
    full_env = {**base, "COLUMNS": "250", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "pgplug", *args], env=full_env, cwd=cwd, capture_output=True, text=True, timeout=300
    )


# -- built-ins -------------------------------------------------------------------------------------


def test_builtins_are_registered_through_the_hooks(host: PluginHost) -> None:
    assert [p.name for p in host.plugins()] == list(BUILTIN_PLUGINS)
    assert {p.source for p in host.plugins()} == {BUILTIN_SOURCE}
    assert set(host.estimators.names()) == BUILTIN_ESTIMATORS
    assert {"a2c", "reinforce"} <= set(host.algorithms.names())
    assert {e.source for e in host.estimators} | {e.source for e in host.algorithms} == {BUILTIN_SOURCE}
    impls = host.pm.hook.pgplug_register_estimators.get_hookimpls()
    assert [impl.plugin_name for impl in impls] == ["pgplug.plugins.estimators"]
    # The registry holds nothing the hook did not register: without the plugin, no estimators.
    host.unregister("pgplug.plugins.estimators")
    assert len(host.estimators) == 0
    assert {"a2c", "reinforce"} <= set(host.algorithms.names())


def _names_used(path: Path) -> dict[str, int]:
    """Identifiers and words of string literals in a module, docstrings excluded, with a line number."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    used: dict[str, int] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            words = re.findall(r"\w+", node.value)
        elif isinstance(node, ast.Name):
            words = [node.id]
        elif isinstance(node, ast.Attribute):
            words = [node.attr]
        elif isinstance(node, ast.alias):
            words = [*node.name.split("."), node.asname or ""]
        else:
            continue
        for word in words:
            used.setdefault(word, node.lineno)
    return used


def test_core_names_no_particular_estimator_or_algorithm(host: PluginHost) -> None:
    builtin = {w for reg in (host.estimators, host.algorithms) for e in reg for w in (e.name, e.cls.__name__)}
    assert {"gae", "GAE", "a2c", "A2C", "REINFORCE"} <= builtin
    core = sorted((ROOT / "pgplug").rglob("*.py"))
    assert ROOT / "pgplug" / "plugin" / "host.py" in core
    allowed = {
        # compat.py names SB3's own A2C class (stable_baselines3.A2C) to open SB3's zips: not pgplug's A2C.
        ("compat.py", "A2C"),
        # The built-in plugin modules, listed by name as pytest lists its default plugins.
        *(("registries.py", name) for name in ("reinforce", "a2c", "a3c")),
        # 'pgplug bc' trains an a2c student unless --algo says otherwise.
        ("bc.py", "a2c"),
        # The variance lab reproduces the lecture's comparison: its ratios divide by full_return's variance, its
        # critic learns the reward-to-go, its default reference is baseline, its default model a new reinforce one.
        *(("variance.py", name) for name in ("full_return", "reward_to_go", "baseline", "reinforce")),
    }
    offences = {
        f"{p.name}:{line} {word}"
        for p in core
        for word, line in _names_used(p).items()
        if word in builtin and (p.name, word) not in allowed
    }
    assert offences == set()


# -- an installed plugin (entry point) -------------------------------------------------------------


def test_installed_plugin_is_found_through_its_entry_point(installed: PluginHost) -> None:
    entry = installed.estimators.entry("clipped_gae")
    assert entry.source == "pgplug-clipped-gae"
    assert entry.cls.__module__ == "pgplug_clipped_gae"
    info = {p.name: p for p in installed.plugins()}["clipped_gae"]
    assert (info.source, info.version, info.hooks) == ("pgplug-clipped-gae", "0.1.0", ("pgplug_register_estimators",))
    # The same hook as the built-ins, one implementation per plugin, in registration order.
    impls = installed.pm.hook.pgplug_register_estimators.get_hookimpls()
    assert [impl.plugin_name for impl in impls] == ["pgplug.plugins.estimators", "clipped_gae"]
    assert set(installed.estimators.names()) == BUILTIN_ESTIMATORS | {"clipped_gae"}
    assert "clipped_gae" in A2C.compatible_estimators()


@pytest.mark.slow
def test_installed_plugin_trains_a2c(installed: PluginHost) -> None:
    recorder = RolloutRecorder()
    installed.register(recorder, name="rollout-recorder", source="test")
    model = A2C("MlpPolicy", "CartPole-v1", estimator="clipped_gae", estimator_kwargs={"clip": 1.0}, seed=0)
    assert type(model.estimator) is installed.estimators.get("clipped_gae")
    assert model.estimator.params() == {"clip": 1.0, "gae_lambda": 0.95}
    model.learn(200)
    assert model.num_timesteps == 200
    assert len(recorder.advantages) == 200 // (model.n_steps * model.n_envs)
    advantages, returns = th.cat(recorder.advantages), th.cat(recorder.returns)
    assert advantages.abs().max().item() == 1.0  # clipped, and the clip was reached
    assert returns.max().item() > 1.0  # the critic's targets are not clipped
    installed.unregister("rollout-recorder")


@pytest.mark.parametrize("blocked_name", ["clipped_gae", "pgplug-clipped-gae"])
def test_disable_env_var_blocks_an_installed_plugin(site: Path, clean_env, blocked_name: str) -> None:
    clean_env.setenv(DISABLE_ENV_VAR, f"some-other-plugin, {blocked_name}")
    host = get_host()
    assert "clipped_gae" not in host.estimators
    assert "clipped_gae" not in [p.name for p in host.plugins()]
    with pytest.raises(UnknownNameError, match=r"unknown estimator 'clipped_gae'; valid estimators: baseline, "):
        make_estimator("clipped_gae")


def test_blocking_by_name_in_python(site: Path) -> None:
    assert "clipped_gae" not in PluginHost(blocked=["clipped_gae"]).estimators
    host = PluginHost()
    assert "clipped_gae" in host.estimators
    host.pm.set_blocked("clipped_gae")  # as tox does: unregisters it, and the registries follow
    assert "clipped_gae" not in host.estimators
    assert host.pm.is_blocked("clipped_gae")
    module = sys.modules["pgplug_clipped_gae"]
    assert host.register(module, name="clipped_gae", source="pgplug-clipped-gae") is None
    assert "clipped_gae" not in host.estimators


def test_installed_and_local_plugin_clash_names_both(installed: PluginHost) -> None:
    with pytest.raises(PluginClashError) as error:
        installed.load_local(str(MY_ESTIMATOR))
    message = str(error.value)
    assert "estimator name 'clipped_gae' is registered twice" in message
    assert "by pgplug-clipped-gae (pgplug_clipped_gae.ClippedGAE)" in message
    assert f"by local file {MY_ESTIMATOR}" in message
    assert installed.estimators.entry("clipped_gae").source == "pgplug-clipped-gae"


def test_broken_installed_plugin_names_the_switch(site: Path) -> None:
    (site / "pgplug_clipped_gae.py").write_text("import torch_extras_that_do_not_exist\n")
    with pytest.raises(PgplugError) as error:
        get_host()
    assert str(error.value) == (
        "plugin 'clipped_gae' (pgplug-clipped-gae, pgplug_clipped_gae) failed to import: "
        "ModuleNotFoundError: No module named 'torch_extras_that_do_not_exist'; "
        f"set {DISABLE_ENV_VAR}=clipped_gae to skip it"
    )


@pytest.mark.slow
def test_example_package_installs_with_pip(tmp_path: Path, clean_env) -> None:
    """The example really is an installable distribution: pip builds and installs it, offline."""
    source, target = tmp_path / "src", tmp_path / "target"
    shutil.copytree(PACKAGE, source)
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps", "--no-index"]
    subprocess.run([*pip, "--target", str(target), str(source)], check=True, capture_output=True, timeout=300)
    probe = (
        "from pgplug.contracts.registries import get_host; "
        "e = get_host().estimators.entry('clipped_gae'); print(e.source)"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300)
    assert out.stdout.strip() == "pgplug-clipped-gae", out.stderr


def test_cli_list_shows_installed_plugin_and_sources(site: Path) -> None:
    result = run_pgplug("list", env={"PYTHONPATH": str(site)})
    assert result.returncode == 0, result.stderr
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if line.count("│") > 3}
    assert set(rows) >= BUILTIN_ESTIMATORS | {"a2c", "reinforce", "clipped_gae"}
    assert "pgplug-clipped-gae" in rows["clipped_gae"]
    assert all(BUILTIN_SOURCE in rows[name] for name in BUILTIN_ESTIMATORS | {"a2c", "reinforce"})
    blocked = run_pgplug("list", env={"PYTHONPATH": str(site), DISABLE_ENV_VAR: "clipped_gae"})
    assert blocked.returncode == 0 and "clipped_gae" not in blocked.stdout and "gae" in blocked.stdout


# -- local plugins: --plugin FILE and PGPLUG_PLUGINS ------------------------------------------------


def test_plugin_file_adds_an_estimator_and_loading_twice_is_harmless(host: PluginHost) -> None:
    module = host.load_local(str(MY_ESTIMATOR))
    entry = host.estimators.entry("clipped_gae")
    assert entry.cls is module.ClippedGAE
    assert entry.source == f"local file {MY_ESTIMATOR}"
    plugins = host.plugins()
    assert host.load_local(str(MY_ESTIMATOR)) is module
    assert host.load_local(os.path.relpath(MY_ESTIMATOR)) is module
    assert host.plugins() == plugins
    assert host.estimators.entry("clipped_gae") == entry


def test_two_plugin_files_with_one_stem_stay_apart(host: PluginHost, tmp_path: Path) -> None:
    for folder, name in (("a", "first"), ("b", "second")):
        (tmp_path / folder).mkdir()
        source = MY_ESTIMATOR.read_text().replace('"clipped_gae"', f'"{name}"')
        (tmp_path / folder / "my_estimator.py").write_text(source)
        host.load_local(str(tmp_path / folder / "my_estimator.py"))
    assert host.estimators.entry("first").source == f"local file {tmp_path / 'a' / 'my_estimator.py'}"
    assert host.estimators.entry("second").source == f"local file {tmp_path / 'b' / 'my_estimator.py'}"


def test_env_var_loads_files_and_modules(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.syspath_prepend(str(FIXTURES))
    clean_env.setenv(PLUGINS_ENV_VAR, os.pathsep.join([str(MY_ESTIMATOR), "", " scaled_td_plugin "]))
    try:
        host = get_host()
        assert host.estimators.entry("clipped_gae").source == f"local file {MY_ESTIMATOR}"
        # A hook without @hookimpl is used all the same.
        assert host.estimators.entry("scaled_td").source == "local module scaled_td_plugin"
        rollout = random_rollout(seed=1)
        td = make_estimator("td")(**rollout)
        scaled = make_estimator("scaled_td", {"scale": 3.0})(**rollout)
        th.testing.assert_close(scaled.advantages, 3.0 * td.advantages)
        th.testing.assert_close(scaled.returns, td.returns)
        # What an A3C worker process does: replay the local plugins into its own host.
        assert host.local_plugins() == [str(MY_ESTIMATOR), "scaled_td_plugin"]
        replica = PluginHost(load_entry_points=False, load_env=False)
        for spec in host.local_plugins():
            replica.load_local(spec)
        assert replica.estimators.get("clipped_gae") is host.estimators.get("clipped_gae")
        assert replica.estimators.get("scaled_td") is host.estimators.get("scaled_td")
    finally:
        sys.modules.pop("scaled_td_plugin", None)


@pytest.mark.slow
def test_plugin_file_estimator_trains_a2c(host: PluginHost) -> None:
    host.load_local(str(MY_ESTIMATOR))
    model = A2C("MlpPolicy", "CartPole-v1", estimator="clipped_gae", estimator_kwargs={"clip": 0.5}, seed=0)
    model.learn(100)
    assert repr(model.estimator) == "ClippedGAE(clip=0.5, gae_lambda=0.95)"
    assert model.num_timesteps == 100


def test_plugin_clashing_with_a_builtin_names_both_sources(host: PluginHost) -> None:
    plugins = host.plugins()
    path = FIXTURES / "clash_gae.py"
    with pytest.raises(PluginClashError) as error:
        host.load_local(str(path))
    assert re.fullmatch(
        r"estimator name 'gae' is registered twice: by built-in \(pgplug\.plugins\.estimators\.GAE\) "
        rf"and by local file {re.escape(str(path))} \(pgplug_local_clash_gae_[0-9a-f]{{8}}\.MyGAE\)",
        str(error.value),
    )
    assert host.plugins() == plugins  # the clashing plugin is not left half-registered
    assert host.estimators.get("gae") is GAE


def _local_modules(path: Path) -> list[str]:
    return [name for name, m in sys.modules.items() if getattr(m, "__file__", None) == str(path)]


def test_unknown_name_lists_the_valid_names(host: PluginHost) -> None:
    valid = "baseline, full_return, gae, nstep, reward_to_go, td"
    with pytest.raises(UnknownNameError) as error:
        host.estimators.get("gea")
    assert str(error.value) == f"unknown estimator 'gea'; valid estimators: {valid}"
    host.load_local(str(MY_ESTIMATOR))
    with pytest.raises(PgplugError, match=r"^unknown estimator 'gea'; valid estimators: baseline, clipped_gae, "):
        A2C("MlpPolicy", "CartPole-v1", estimator="gea")
    with pytest.raises(UnknownNameError, match=r"^unknown algorithm 'a2d'; valid algorithms: (\w+, )*a2c, "):
        host.algorithms.get("a2d")


BROKEN = {
    "typo_hook.py": "implements unknown hook 'pgplug_register_estimator'; did you mean 'pgplug_register_estimators'?",
    "undecorated_typo.py": "implements unknown hook 'pgplug_regster_algorithms'; "
    "did you mean 'pgplug_register_algorithms'?",
    "bad_argument.py": "is invalid: hookimpl definition: pgplug_register_estimators(registry); "
    "Argument(s) {'registry'} are declared in the hookimpl but can not be found in the hookspec",
    "nameless.py": "has no 'name' attribute",
    "not_an_estimator.py": "does not subclass pgplug.contracts.estimator.Estimator",
    "raising_hook.py": "failed in pgplug_register_estimators: RuntimeError: boom",
}


@pytest.mark.parametrize("filename", sorted(BROKEN))
def test_broken_plugin_is_one_error_line_naming_it(host: PluginHost, filename: str) -> None:
    plugins, estimators = host.plugins(), host.estimators.names()
    path = FIXTURES / filename
    with pytest.raises(PgplugError) as error:
        host.load_local(str(path))
    message = str(error.value)
    assert "\n" not in message
    assert str(path) in message
    assert message.endswith(BROKEN[filename])
    assert host.plugins() == plugins and host.estimators.names() == estimators


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            "import_error.py",
            "failed to import: ModuleNotFoundError: No module named 'torch_extras_that_do_not_exist' (line 3)",
        ),
        ("syntax_error.py", "failed to import: SyntaxError: "),
        ("missing/nowhere.py", "does not exist"),
        ("no_such_pgplug_plugin_module", "plugin module 'no_such_pgplug_plugin_module' not found"),
        ("not a module!", "is neither a .py file nor a module name"),
    ],
)
def test_plugin_that_cannot_be_imported_is_one_error_line(
    host: PluginHost, tmp_path: Path, spec: str, message: str
) -> None:
    (tmp_path / "syntax_error.py").write_text("def pgplug_register_estimators(register)\n    pass\n")
    path = FIXTURES / spec if (FIXTURES / spec).exists() else tmp_path / spec
    target = str(path) if spec.endswith(".py") else spec
    plugins = host.plugins()
    with pytest.raises(PgplugError) as error:
        host.load_local(target)
    assert "\n" not in str(error.value)
    assert message in str(error.value)
    assert target in str(error.value) or spec in str(error.value)
    assert host.plugins() == plugins
    assert not _local_modules(path)  # a failed import leaves nothing in sys.modules


def test_cli_broken_plugin_is_one_stderr_line() -> None:
    result = run_pgplug("list", "--plugin", str(FIXTURES / "typo_hook.py"))
    assert result.returncode == 1
    assert result.stderr == (
        f"pgplug: error: local file {FIXTURES / 'typo_hook.py'} implements unknown hook "
        "'pgplug_register_estimator'; did you mean 'pgplug_register_estimators'?\n"
    )


def test_throwaway_plugin_object_registers_and_unregisters(host: PluginHost) -> None:
    """As llm's tests do: an object with hook methods, registered for one test and removed after."""

    class HalvedGAE(GAE):
        name = "halved_gae"

    class Throwaway:
        @hookimpl
        def pgplug_register_estimators(self, register) -> None:
            register(HalvedGAE)

    host.register(Throwaway(), name="throwaway", source="test")
    assert host.estimators.entry("halved_gae").source == "test"
    assert host.unregister("throwaway") is not None
    assert "halved_gae" not in host.estimators
    assert host.unregister("throwaway") is None


def test_direct_pluggy_registration_is_seen_too(host: PluginHost) -> None:
    class Direct:
        @hookimpl
        def pgplug_register_estimators(self, register) -> None:
            register(type("DirectGAE", (GAE,), {"name": "direct_gae"}))

    host.pm.register(Direct(), name="direct")
    assert host.estimators.entry("direct_gae").source == "direct"
    host.pm.unregister(name="direct")
    assert "direct_gae" not in host.estimators


# -- the CLI with a plugin (pgplug train) ----------------------------------------------------------


@pytest.mark.slow
def test_cli_trains_with_a_plugin_file(tmp_path: Path) -> None:
    result = run_pgplug(
        "train", "--algo", "a2c", "--env", "CartPole-v1", "-n", "500", "--seed", "0",
        "--estimator", "clipped_gae", "--estimator-kwargs", "clip=1.0",
        "--plugin", str(MY_ESTIMATOR), "-f", str(tmp_path),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (model,) = tmp_path.rglob("*.zip")
    config = model.parent / "config.yml"  # pgplug's, beside the model (the zoo's copy is in <run>/<env>/)
    assert "estimator: clipped_gae" in config.read_text()


# -- the examples of docs/writing-plugins.md -------------------------------------------------------


def test_both_example_estimators_clip_gae(host: PluginHost) -> None:
    single_file = host.load_local(str(MY_ESTIMATOR)).ClippedGAE
    packaged = PluginHost(load_entry_points=False, load_env=False)
    packaged_cls = packaged.load_local(str(PACKAGE / "pgplug_clipped_gae.py")).ClippedGAE
    for seed in range(5):
        rollout = random_rollout(seed)
        reference = GAE(gae_lambda=0.9)(**rollout)
        assert reference.advantages.abs().max() > 2.0
        for cls in (single_file, packaged_cls):
            estimate = cls(clip=2.0, gae_lambda=0.9)(**rollout)
            th.testing.assert_close(estimate.advantages, reference.advantages.clamp(-2.0, 2.0), rtol=0, atol=0)
            th.testing.assert_close(estimate.returns, reference.returns, rtol=0, atol=0)
    for cls in (single_file, packaged_cls):
        assert cls.needs_critic and not cls.needs_complete_episodes and cls.name == "clipped_gae"
        for bad in (0, -1.0, "1", True, float("inf"), float("nan")):
            with pytest.raises(PgplugError, match=r"^clipped_gae's clip must be a positive number, got "):
                cls(clip=bad)
        with pytest.raises(PgplugError, match="gae_lambda"):
            cls(gae_lambda=1.5)


@pytest.mark.slow
def test_example_algorithm_trains_saves_and_loads(host: PluginHost, tmp_path: Path) -> None:
    host.load_local(str(MY_ALGORITHM))
    entry = host.algorithms.entry("vpg")
    assert entry.source == f"local file {MY_ALGORITHM}"
    assert pgplug.VPG is entry.cls
    with pytest.raises(IncompatibleEstimatorError, match="estimators that fit vpg: gae, nstep, td"):
        entry.cls("MlpPolicy", "CartPole-v1", estimator="reward_to_go")
    model = entry.cls("MlpPolicy", "CartPole-v1", n_steps=8, seed=0).learn(64)
    assert model.num_timesteps == 64 and model._n_updates == 8 and isinstance(model.estimator, GAE)
    model.save(tmp_path / "vpg")
    loaded = entry.cls.load(tmp_path / "vpg.zip")
    assert loaded.n_steps == 8
    for key, value in model.policy.state_dict().items():
        th.testing.assert_close(loaded.policy.state_dict()[key], value)
    obs = np.zeros((1, 4), dtype=np.float32)
    assert (loaded.predict(obs, deterministic=True)[0] == model.predict(obs, deterministic=True)[0]).all()


def _doc() -> str:
    return DOCS.read_text()


@pytest.mark.parametrize(
    "path", [MY_ESTIMATOR, MY_ALGORITHM, PACKAGE / "pgplug_clipped_gae.py", PACKAGE / "pyproject.toml"]
)
def test_docs_show_the_example_files_verbatim(path: Path) -> None:
    assert path.read_text().strip() in _doc()


def test_docs_cover_every_hook_with_its_arguments() -> None:
    specs = {
        name: list(inspect.signature(fn).parameters)
        for name, fn in vars(hookspecs).items()
        if name.startswith("pgplug_") and callable(fn)
    }
    assert len(specs) >= 5
    for name, params in specs.items():
        assert f"`{name}({', '.join(params)})`" in _doc(), name


def test_docs_doctest_blocks_run(installed: PluginHost) -> None:
    blocks = re.findall(r"<!-- doctest -->\n```python\n(.*?)```", _doc(), flags=re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, str(DOCS), "exec"), {})


def test_docs_error_messages_are_the_real_ones(host: PluginHost) -> None:
    """The clash and unknown-hook messages the docs quote are what pgplug prints (paths aside)."""
    with pytest.raises(PluginClashError) as clash:
        host.load_local(str(FIXTURES / "clash_gae.py"))
    with pytest.raises(PgplugError) as typo:
        host.load_local(str(FIXTURES / "typo_hook.py"))

    def normalise(text: str) -> str:
        text = re.sub(r"pgplug_local_\w+_[0-9a-f]{8}", "MODULE", text)
        return re.sub(r"/\S*?\w+\.py", "FILE", text)

    for error in (clash, typo):
        assert normalise(str(error.value)) in normalise(_doc())


def test_plugin_options_reach_the_plugin_through_configure(host: PluginHost, capsys) -> None:
    """``pgplug_addoption`` adds an option; ``pgplug_configure`` hands the plugin its parsed value."""
    from pgplug.cli import main

    seen: dict[str, object] = {}

    class OptionPlugin:
        @hookimpl
        def pgplug_addoption(self, parser, command):
            if command == "list":
                parser.add_argument("--shout", default="quiet")

        @hookimpl
        def pgplug_configure(self, args, command):
            seen[command] = args.shout

    host.register(OptionPlugin(), name="option-plugin", source="test")
    assert main(["list", "--shout", "loud"]) == 0
    assert seen == {"list": "loud"}
    capsys.readouterr()


def test_a_failing_command_hook_is_one_error_naming_its_plugin(host: PluginHost) -> None:
    """``pgplug_addoption``/``pgplug_configure`` run through ``call_checked``: the plugin that raised is named."""

    class Quiet:
        @hookimpl
        def pgplug_configure(self, args, command):
            pass

    class Failing:
        @hookimpl
        def pgplug_configure(self, args, command):
            raise KeyError(command)

    host.register(Quiet(), name="quiet", source="test")
    host.register(Failing(), name="failing", source="pgplug-failing")
    with pytest.raises(PgplugError) as error:
        host.call_checked("pgplug_configure", args=None, command="train")
    assert str(error.value) == "plugin 'failing' (pgplug-failing) failed in pgplug_configure: KeyError: 'train'"
    host.unregister("failing")
    assert host.call_checked("pgplug_configure", args=None, command="train") == []
    host.unregister("quiet")
