"""The docs site's build hooks (docs/_hooks/): links written for GitHub map to the site's pages, math becomes
MathML, and griffe sees plugins/ as pgplug.plugins. ``make docs`` builds the whole site with --strict."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType, SimpleNamespace

import griffe

ROOT = Path(__file__).resolve().parent.parent


def hook(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"docs_hook_{name}", ROOT / "docs" / "_hooks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rewritten(markdown: str, src_uri: str) -> str:
    page = SimpleNamespace(file=SimpleNamespace(src_uri=src_uri))
    config = SimpleNamespace(config_file_path=str(ROOT / "mkdocs.yml"))
    return hook("repo_pages").on_page_markdown(markdown, page=page, config=config, files=None)


def test_readme_links_to_docs_map_to_the_site_pages() -> None:
    text = "[cli](docs/cli.md#pgplug-plot) ![curve](docs/images/cartpole-a2c-a3c.png) [bench](benchmarks/README.md)"
    assert (
        rewritten(text, "index.md")
        == "[cli](cli.md#pgplug-plot) ![curve](images/cartpole-a2c-a3c.png) [bench](benchmarks.md)"
    )


def test_docs_links_out_of_docs_map_to_the_site_pages() -> None:
    assert (
        rewritten("[b](../benchmarks/README.md#x) [r](../README.md)", "cli.md") == "[b](benchmarks.md#x) [r](index.md)"
    )
    assert (
        rewritten("[e](../estimators.md) [h](../../README.md)", "api/hooks.md")
        == "[e](../estimators.md) [h](../index.md)"
    )


def test_links_to_repository_files_outside_the_site_keep_their_text() -> None:
    text = "run [the benchmark](../benchmarks/throughput.py) or see [a2c](../plugins/a2c.py#L1)"
    assert rewritten(text, "cli.md") == "run the benchmark or see a2c"


def test_links_to_nothing_are_left_for_strict_to_report() -> None:
    text = (
        "[sb3](https://github.com/DLR-RM/stable-baselines3) [top](#top) [m](mailto:x@y) "
        "[gone](../benchmarks/gone.py) [up](../../etc/hosts) ![plot](../benchmarks/throughput.py)"
    )
    assert rewritten(text, "cli.md") == text


def test_optional_pages_leave_the_nav_while_absent(tmp_path: Path) -> None:
    nav = [{"Home": "index.md"}, {"Results": "results.md"}, {"Guide": [{"CLI": "cli.md"}, "results.md"]}]
    without = hook("repo_pages")._without_missing(nav, tmp_path)
    assert without == [{"Home": "index.md"}, {"Guide": [{"CLI": "cli.md"}]}]
    (tmp_path / "results.md").write_text("# Results\n")
    assert hook("repo_pages")._without_missing(nav, tmp_path) == nav


def test_math_becomes_mathml() -> None:
    html = (
        r'<p>with <span class="arithmatex">\(\Psi_t &lt; 1\)</span></p>'
        r'<div class="arithmatex">\[G_t = r_t + \gamma\,G_{t+1}\]</div>'
    )
    out = hook("math").on_page_content(html)
    assert "arithmatex" not in out
    assert out.count("<math ") == 2 and 'display="inline"' in out and 'display="block"' in out
    assert "<mi>&#x003A8;</mi>" in out  # \Psi
    assert "<mo>&#x0003C;</mo>" in out  # the page's escaped < is one operator of the formula


def test_griffe_sees_the_built_in_plugins_as_pgplug_plugins() -> None:
    extensions = griffe.load_extensions(f"{ROOT / 'docs' / '_hooks' / 'griffe_pgplug.py'}:PgplugLayout")
    loader = griffe.GriffeLoader(extensions=extensions, search_paths=[str(ROOT)])
    pgplug = loader.load("pgplug")
    gae = pgplug["plugins.estimators.GAE"]
    assert gae.path == "pgplug.plugins.estimators.GAE"
    assert gae.filepath == ROOT / "plugins" / "estimators.py"
    assert "plugins" not in loader.modules_collection.members  # only under pgplug, as installed
    # Sphinx roles became cross-references that stay code when the target is not documented.
    module_doc = pgplug["plugins.estimators"].docstring.value
    assert '<autoref identifier="pgplug.plugins.estimator_math" optional>' in module_doc
    assert ":mod:" not in module_doc
