"""Text from elsewhere (registries, pulled images and runs, a user's files) as it may reach a terminal, a log or a
page: control characters neutralised, and numbers a strict JSON reader accepts.

A terminal obeys what it is sent: ESC starts a sequence that can move the cursor, retitle the window, rewrite what
was printed or make a hyperlink (OSC 8); CR returns to the start of a line so the next text hides the last; BEL
rings; C1 controls (U+0080-U+009F) are 8-bit ESC sequences to some terminals; the bidi controls (U+202A-U+202E,
U+2066-U+2069, U+200E/F, U+061C) reorder what is shown ("Trojan Source"); U+2028/U+2029 break lines. Each becomes
its visible escape (``\\x1b``, ``\\u202e``), so a hostile name shows what it is and cannot pass for another.
"""

from __future__ import annotations

import math
import re
from typing import Any

_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def shown(text: object) -> str:
    """``str(text)`` with every control character (C0 but none kept, DEL, C1, bidi and line separators) written as
    its escape."""
    return _CONTROLS.sub(_escape, text if isinstance(text, str) else str(text))


def clipped(text: object, limit: int) -> str:
    """``text`` for one line of a message: every character ``str.isprintable`` refuses (the controls above, and
    format and separator characters such as zero-width ones) written as its escape, at most ``limit`` characters
    of the text, then ``...``."""
    text = text if isinstance(text, str) else str(text)
    out = "".join(c if c.isprintable() else (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")
                  for c in text[:limit])
    return out + ("..." if len(text) > limit else "")


def json_safe(value: Any) -> Any:
    """``value`` with every NaN and infinity (a float, anywhere in dicts, lists and tuples) as None: JSON has no
    such numbers, and ``json.dumps`` would write ``NaN`` that strict readers refuse."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
