"""The docs cite only files and modules that exist: a path or dotted name that moved is found here, not by a reader."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md"), *(ROOT / "benchmarks").glob("*.md")])
#: Repository paths as docs write them: `pgplug/runtime/collector.py`, `plugins/a3c/`, `configs/a2c.yml`.
PATH = re.compile(r"`((?:pgplug|plugins|configs|docs|tests|benchmarks)/[\w./-]*(?:\.\w+|/))`")
#: Dotted names of pgplug's modules and their members: `pgplug.runtime.collector.RolloutCollector`.
DOTTED = re.compile(r"\bpgplug(?:\.\w+)+")


def resolves(dotted: str) -> bool:
    """Whether ``dotted`` is an importable module, or a module followed by attributes it has."""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attr in parts[split:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_cited_paths_exist(doc: Path) -> None:
    text = doc.read_text()
    missing = sorted({path for path in PATH.findall(text) if not (ROOT / path.rstrip("/")).exists()})
    assert missing == [], f"{doc.relative_to(ROOT)} cites files that do not exist"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_cited_modules_exist(doc: Path) -> None:
    text = doc.read_text()
    names = {name.rstrip(".") for name in DOTTED.findall(text)}
    missing = sorted(name for name in names if not resolves(name))
    assert missing == [], f"{doc.relative_to(ROOT)} cites modules or names that do not exist"
