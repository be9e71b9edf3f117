"""What import-linter cannot see: torch's private internals are touched in one module only."""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INTERNALS = ROOT / "pgplug" / "fast" / "torch_internals.py"
#: torch's private functions and attributes that pgplug's speed paths use, as code (not prose) spells them.
PRIVATE = re.compile(
    r"\b(?:th|torch)\._\w+|\._version\b|\b_validate_args\b|\._(?:forward|backward)_(?:pre_)?hooks\b"
    r"|\._compiled_call_impl\b|\._parameters\b(?!\()"  # nn.Module's dict, not a method of the same name
    r"|\._optimizer_step_\w+_hooks\b|\b_global_\w+_hooks\b|__dict__\[\s*['\"]training['\"]\s*\]|\._modules\b"
)


def code_lines(path: Path) -> dict[int, str]:
    """Each line's code, without comments and string literals (docstrings mention torch's internals)."""
    lines: dict[int, list[str]] = {}
    tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
    for token in tokens:
        if token.type in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
            continue
        text = token.string if token.type != tokenize.STRING else "'training'" * ("training" in token.string)
        lines.setdefault(token.start[0], []).append(text)
    return {number: "".join(parts) for number, parts in lines.items()}


def offences_in(path: Path) -> list[str]:
    return [f"{path.relative_to(ROOT)}:{n}: {code}" for n, code in code_lines(path).items() if PRIVATE.search(code)]


def test_torch_internals_are_touched_in_one_module() -> None:
    sources = [*(ROOT / "pgplug").rglob("*.py"), *(ROOT / "plugins").rglob("*.py")]
    assert [offence for path in sources if path != INTERNALS for offence in offences_in(path)] == []
    assert offences_in(INTERNALS)  # the pattern does find what it looks for
