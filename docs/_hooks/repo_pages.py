"""mkdocs hook: Markdown pages that live outside docs/ join the site, and links are written as on GitHub.

README.md is the home page and benchmarks/README.md a page of its own, read where they are (no copy to keep in
step). Every page's relative links are written against the repository (``docs/cli.md`` in the README,
``../benchmarks/README.md`` in docs/cli.md) so they work on GitHub; here they are mapped to the site's files.
A link to a repository file that is no page of the site (``../benchmarks/throughput.py``) keeps only its text,
and a link to a path that exists nowhere is left as it is, for ``mkdocs build --strict`` to report.
Nav entries of optional pages (results.md, written by the benchmarks) are dropped while the file is absent.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

#: Repository path -> the site's page for it.
REPO_PAGES = {"README.md": "index.md", "benchmarks/README.md": "benchmarks.md"}
#: Pages of docs/ that the nav lists only while they exist.
OPTIONAL_PAGES = {"results.md"}
#: An inline link or image: ``[text](target)`` or ``![alt](target#anchor)``.
LINK = re.compile(r"(?P<image>!?)\[(?P<text>[^\]]*)\]\((?P<target>[^)\s#]+)(?P<anchor>#[^)\s]*)?\)")
DOCS = "docs/"


def _without_missing(nav: list[Any], docs_dir: Path) -> list[Any]:
    """``nav`` less the entries of optional pages whose file is absent."""
    kept = []
    for entry in nav:
        title, value = next(iter(entry.items())) if isinstance(entry, dict) else (None, entry)
        if isinstance(value, list):
            value = _without_missing(value, docs_dir)
        elif value in OPTIONAL_PAGES and not (docs_dir / value).exists():
            continue
        kept.append({title: value} if title is not None else value)
    return kept


def on_config(config: MkDocsConfig) -> MkDocsConfig:
    config.nav = _without_missing(config.nav or [], Path(config.docs_dir))
    return config


def _root(config: MkDocsConfig) -> Path:
    return Path(config.config_file_path).parent


def on_files(files: Files, config: MkDocsConfig) -> Files:
    for repo_path, uri in REPO_PAGES.items():
        files.append(File.generated(config, uri, abs_src_path=str(_root(config) / repo_path)))
    return files


def on_serve(server: Any, config: MkDocsConfig, builder: Any) -> Any:
    for repo_path in REPO_PAGES:
        server.watch(str(_root(config) / repo_path))
    return server


def site_uri(repo_path: str) -> str | None:
    """The site's file for a repository path, or None when the site does not have it."""
    if repo_path in REPO_PAGES:
        return REPO_PAGES[repo_path]
    return repo_path.removeprefix(DOCS) if repo_path.startswith(DOCS) else None


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    uri = page.file.src_uri
    repo_path = next((path for path, site in REPO_PAGES.items() if site == uri), DOCS + uri)

    def rewrite(match: re.Match[str]) -> str:
        target = match["target"]
        if "://" in target or target.startswith(("/", "mailto:")):
            return match[0]
        linked = posixpath.normpath(posixpath.join(posixpath.dirname(repo_path), target))
        mapped = site_uri(linked)
        if mapped is None:
            in_repo = not match["image"] and not linked.startswith("..") and (_root(config) / linked).exists()
            return match["text"] if in_repo else match[0]
        relative = posixpath.relpath(mapped, posixpath.dirname(uri) or ".")
        return f"{match['image']}[{match['text']}]({relative}{match['anchor'] or ''})"

    return LINK.sub(rewrite, markdown)
