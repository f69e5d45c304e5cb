"""TEMPORARY stand-in for issue 15's ``parse_dotenv``, until that branch lands.

Replaced by the health branch's reusable dotenv parser at the merge; kept
minimal on purpose (one parser of ``.env`` files belongs to forkwell, not two).
"""

from __future__ import annotations

import re

_LINE = re.compile(r"(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)\Z")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$"}


def parse_dotenv(text: str) -> dict[str, str]:
    """``KEY=value`` lines; raises ValueError('line N: ...') on a line that is not one."""
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if m is None:
            raise ValueError(f"line {number}: expected KEY=value, got {raw!r}")
        key, value = m.groups()
        if value[:1] == "'" and value.endswith("'") and len(value) > 1:
            value = value[1:-1]
        elif value[:1] == '"' and len(value) > 1 and value.endswith('"'):
            value = re.sub(r"\\(.)", lambda e: _ESCAPES.get(e[1], "\\" + e[1]), value[1:-1])
        else:
            value = re.sub(r"\s+#.*\Z", "", value).strip()
        values[key] = value
    return values
