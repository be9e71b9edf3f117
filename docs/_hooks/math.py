"""mkdocs hook: the docs' TeX (``$...$`` and ```` ```math ```` blocks, as GitHub renders them) becomes MathML.

pymdownx.arithmatex finds the math and keeps Markdown out of it (``a_t`` stays a subscript, not emphasis), wrapped
as ``\\(...\\)`` or ``\\[...\\]``; here latex2mathml turns each into MathML, which browsers draw natively, so the
site loads no math script and builds offline.
"""

from __future__ import annotations

import html
import re
from typing import Any

from latex2mathml.converter import convert

#: arithmatex's generic output: inline ``<span class="arithmatex">\(tex\)</span>`` or a block
#: ``<div class="arithmatex">\[tex\]</div>``, the TeX HTML-escaped.
MATH = re.compile(
    r'<(?P<tag>span|div) class="arithmatex">\\(?P<open>[(\[])(?P<tex>.*?)\\[)\]]</(?P=tag)>',
    re.DOTALL,
)


def to_mathml(match: re.Match[str]) -> str:
    display = "block" if match["open"] == "[" else "inline"
    return convert(html.unescape(match["tex"]).strip(), display=display)


def on_page_content(content: str, **kwargs: Any) -> str:
    return MATH.sub(to_mathml, content)
