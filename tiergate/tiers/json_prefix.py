"""An incremental checker for "is this text a prefix of a valid JSON object?", for constrained decoding.

    checker = JsonPrefix()
    checker.feed('{"a": [1, tr')   # True: still a valid prefix
    trial = checker.copy(); trial.feed('}')   # False: the token is rejected, `checker` is untouched
    checker.closing_suffix()       # 'ue]}' : the shortest text that completes the object
    checker.done                   # True once the top-level object has closed
    JsonPrefix(required=["city"])  # the top-level object cannot close before it has a "city" key
    checker.feed('{"a": 1, "a"')   # False: a key may appear once per object

The local tier's JSON mode asks this checker, at every decoding step, which of the model's most probable
tokens keep the output a valid JSON prefix, and appends `closing_suffix()` when the token budget runs out, so
the answer always parses. A pushdown automaton over characters: small, exact, and cheap to copy per candidate.
`required` is the one piece of a json_schema it enforces (top-level keys): enough to stop a small model from
answering `{}`, without the weight of a full schema compiler. A key may appear once in each object: small models
loop (`"name":"cat","age":2,"name":"dog",...`), and a parser would keep the last of each.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

_WS = " \t\n\r"
_DIGITS = "0123456789"
_HEX = "0123456789abcdefABCDEF"
_ESCAPES = '"\\/bfnrtu'
_LITERALS = {"t": "true", "f": "false", "n": "null"}
_NUM_TERMINAL = {"zero", "int", "frac", "expdigits"}


class JsonPrefix:
    """The state of a JSON-object prefix; `feed` advances it, `copy` branches it."""

    __slots__ = ("stack", "mode", "is_key", "num", "literal", "unicode_left", "done", "ws_run", "required",
                 "keys", "key_buf")

    def __init__(self, required: Iterable[str] = ()) -> None:
        self.stack: list[str] = []
        self.mode = "start"
        """start | value | value_or_close | key | key_or_close | colon | after | string | escape | unicode |
        number | literal | done"""
        self.is_key = False
        self.num = ""
        self.literal = ""
        self.unicode_left = 0
        self.done = False
        self.ws_run = 0
        """Whitespace characters in a row outside strings, so callers can stop runaway padding."""
        self.required = frozenset(required)
        self.keys: list[frozenset[str]] = []
        """The keys of each open container, parallel to `stack` (empty for arrays)."""
        self.key_buf = ""

    def copy(self) -> JsonPrefix:
        other = JsonPrefix.__new__(JsonPrefix)
        other.stack = list(self.stack)
        other.mode, other.is_key, other.num, other.literal = self.mode, self.is_key, self.num, self.literal
        other.unicode_left, other.done, other.ws_run = self.unicode_left, self.done, self.ws_run
        other.required, other.keys, other.key_buf = self.required, list(self.keys), self.key_buf
        return other

    @property
    def root_keys(self) -> frozenset[str]:
        """The keys of the top-level object so far."""
        return self.keys[0] if self.keys else frozenset()

    def feed(self, text: str) -> bool:
        """Advance over `text`; False (and a state not to be used further) when it breaks the prefix."""
        return all(self._char(c) for c in text)

    def accepts(self, text: str) -> bool:
        """Would `text` keep this a valid prefix? Leaves this state unchanged."""
        return self.copy().feed(text)

    def _value_done(self) -> None:
        self.mode = "after" if self.stack else "done"
        self.done = not self.stack

    def _char(self, c: str) -> bool:
        mode = self.mode
        if mode in ("string", "escape", "unicode"):
            return self._string_char(c)
        if mode == "number":
            if self._number_char(c):
                return True
            if self.num not in _NUM_TERMINAL:
                return False
            self._value_done()
            return self._char(c)
        if mode == "literal":
            if not self.literal or c != self.literal[0]:
                return False
            self.literal = self.literal[1:]
            if not self.literal:
                self._value_done()
            return True
        if c in _WS:
            self.ws_run += 1
            return mode != "start"  # the answer starts with `{`: leading blank lines help no one
        self.ws_run = 0
        if mode == "done":
            return False
        if mode == "start":
            return self._open(c) if c == "{" else False
        if mode in ("value", "value_or_close"):
            if c == "]" and mode == "value_or_close":
                return self._close(c)
            return self._start_value(c)
        if mode in ("key", "key_or_close"):
            if c == "}" and mode == "key_or_close":
                return self._close(c)
            if c == '"':
                self.mode, self.is_key, self.key_buf = "string", True, ""
                return True
            return False
        if mode == "colon":
            if c == ":":
                self.mode = "value"
                return True
            return False
        if mode == "after":
            if c == ",":
                self.mode = "key" if self.stack[-1] == "{" else "value"
                return True
            if c in "}]":
                return self._close(c)
            return False
        return False

    def _open(self, c: str) -> bool:
        self.stack.append(c)
        self.keys.append(frozenset())
        self.mode = "key_or_close" if c == "{" else "value_or_close"
        return True

    def _close(self, c: str) -> bool:
        if not self.stack or {"}": "{", "]": "["}[c] != self.stack[-1]:
            return False
        if len(self.stack) == 1 and not self.required <= self.root_keys:
            return False
        self.stack.pop()
        self.keys.pop()
        self._value_done()
        return True

    def _start_value(self, c: str) -> bool:
        if c in "{[":
            return self._open(c)
        if c == '"':
            self.mode, self.is_key = "string", False
            return True
        if c == "-" or c in _DIGITS:
            self.mode = "number"
            self.num = "sign" if c == "-" else ("zero" if c == "0" else "int")
            return True
        if c in _LITERALS:
            self.mode, self.literal = "literal", _LITERALS[c][1:]
            return True
        return False

    def _string_char(self, c: str) -> bool:
        if self.is_key and not (c == '"' and self.mode == "string"):
            self.key_buf += c  # raw, escapes included; decoded when the key closes
        if self.mode == "escape":
            if c not in _ESCAPES:
                return False
            if c == "u":
                self.mode, self.unicode_left = "unicode", 4
            else:
                self.mode = "string"
            return True
        if self.mode == "unicode":
            if c not in _HEX:
                return False
            self.unicode_left -= 1
            if self.unicode_left == 0:
                self.mode = "string"
            return True
        if c == "\\":
            self.mode = "escape"
            return True
        if c == '"':
            if self.is_key:
                key = json.loads('"' + self.key_buf + '"')
                if key in self.keys[-1]:
                    return False
                self.keys[-1] = self.keys[-1] | {key}
                self.mode = "colon"
            else:
                self._value_done()
            return True
        return ord(c) >= 0x20

    def _number_char(self, c: str) -> bool:
        state = self.num
        if c in _DIGITS:
            nxt = {"sign": "zero" if c == "0" else "int", "int": "int", "dot": "frac", "frac": "frac",
                   "exp": "expdigits", "expsign": "expdigits", "expdigits": "expdigits"}.get(state)
        elif c == ".":
            nxt = "dot" if state in ("zero", "int") else None
        elif c in "eE":
            nxt = "exp" if state in ("zero", "int", "frac") else None
        elif c in "+-":
            nxt = "expsign" if state == "exp" else None
        else:
            nxt = None
        if nxt is None:
            return False
        self.num = nxt
        return True

    def closing_suffix(self) -> str:
        """The shortest text (with `null` placeholders, and any required keys still missing) that turns this
        prefix into a complete object. Built by feeding a copy, so the result is checked by construction."""
        sim = self.copy()
        out: list[str] = []

        def emit(text: str) -> None:
            ok = sim.feed(text)
            assert ok, (text, out)
            out.append(text)

        if sim.mode == "start":
            emit("{")
        if sim.mode == "escape":
            emit("n")
        elif sim.mode == "unicode":
            emit("0" * sim.unicode_left)
        if sim.mode == "string":
            if sim.is_key:  # a key typed so far that the object already holds must become another one
                while json.loads('"' + sim.key_buf + '"') in sim.keys[-1]:
                    emit("_")
            emit('"')
        elif sim.mode == "number" and sim.num not in _NUM_TERMINAL:
            emit("0")
        elif sim.mode == "literal":
            emit(sim.literal)
        if sim.mode == "colon":
            emit(":")
        if sim.mode == "value":
            emit("null")
        if sim.mode == "key":
            missing = sorted(sim.required - sim.root_keys) if len(sim.stack) == 1 else []
            emit(json.dumps(missing[0] if missing else _unused_key(sim.keys[-1])) + ":null")
        while sim.stack:
            if len(sim.stack) == 1:
                for key in sorted(sim.required - sim.root_keys):
                    comma = "," if sim.mode in ("after", "number") else ""
                    emit(comma + json.dumps(key) + ":null")
            emit("}" if sim.stack[-1] == "{" else "]")
        return "".join(out)


def _unused_key(keys: frozenset[str]) -> str:
    """A placeholder key the object does not hold yet: "", else "_", "__", ..."""
    key = ""
    while key in keys:
        key += "_"
    return key
