"""keepalived.conf lexical layer: files, includes, comments, quotes, parameters, braces -> a tree.

The rules follow keepalived's reader (reference §0):

* `#` and `!` start a comment anywhere outside double quotes; `\\#` and `\\!` are literal.
* One statement per line. A `{` or `}` outside quotes splits the line, so `url { path /x }` is the
  three lines `url`, `{`, `path /x` and `}`; two keywords on one line are one keyword with extra
  words, exactly as keepalived reads them.
* Words split on white space; a double-quoted string is one word, quotes removed, no escapes.
  (Scripts are split again with shell-like quoting by `split_command`.)
* `include FILE` (and includer/includem/includew/includeb/includea) with globs and csh braces;
  relative names are relative to the directory of the file that includes them.
* `$NAME=value` definitions (a trailing `\\` continues a definition on the next line: the only
  line continuation keepalived has), `$NAME` / `${NAME}` substitution, and `@id` / `@^id`
  conditional lines matched against the config id.

White space is keepalived's: space, tab, form feed, newline, carriage return and vertical tab,
nothing else. A no-break space (U+00A0) or any other Unicode space is part of a word, as the
bytes are for keepalived. Which `{`/`}` opens or closes which block is decided by the keyword
tables (`stream`), not here.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from pylvs.keepalived.errors import ConfigError, Diagnostics

INCLUDES = ("include", "includer", "includem", "includew", "includeb", "includea")
MAX_INCLUDE_DEPTH = 32
WHITE = " \t\f\n\r\v"  # keepalived's WHITE_SPACE_STR
BLANK = " \t"  # what it strips around a line (isblank in the C locale)
_DEF_RE = re.compile(r"^\$([A-Za-z_][A-Za-z0-9_]*)[ \t]*=[ \t]*(.*)$")
_REF_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


@dataclass
class Line:
    """One logical statement: its words and where it starts."""

    words: list[str]
    file: str
    line: int


@dataclass
class Node:
    """A statement and, when a `{ ... }` follows it, the statements inside."""

    keyword: str
    args: list[str]
    file: str
    line: int
    children: list[Node] | None = None
    closing: Line | None = None  # the line that ended its block (where keepalived reports from after it)
    inner: list[Line] | None = None  # a skipped block's lines, as read

    @property
    def words(self) -> list[str]:
        return [self.keyword, *self.args]


@dataclass
class _Definition:
    lines: list[str]


@dataclass
class _State:
    diags: Diagnostics
    config_id: str | None
    defs: dict[str, _Definition] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)


# -- character level --------------------------------------------------------------------------

def decomment(text: str) -> tuple[str, bool]:
    """Strip a comment and surrounding blanks; returns (text, ended_with_backslash)."""
    out: list[str] = []
    quote = False
    i = 0
    while i < len(text):
        c = text[i]
        if c == '"':
            quote = not quote
        elif c == "\\":
            if i + 1 == len(text):
                return "".join(out).strip(BLANK), True
            nxt = text[i + 1]
            if not quote and nxt in "#!":
                out.append(nxt)  # an escaped comment character is literal
            else:
                out.append(c + nxt)
            i += 2
            continue
        elif not quote and c in "#!":
            break
        out.append(c)
        i += 1
    return "".join(out).strip(BLANK), False


def split_braces(text: str) -> list[str]:
    """Cut a line before and after every `{`/`}` outside double quotes."""
    parts: list[str] = []
    current: list[str] = []
    quote = False
    for c in text:
        if c == '"':
            quote = not quote
        if not quote and c in "{}":
            parts.append("".join(current))
            parts.append(c)
            current = []
        else:
            current.append(c)
    parts.append("".join(current))
    return [p.strip(BLANK) for p in parts if p.strip(BLANK)]


def split_words(text: str, file: str, line: int) -> list[str]:
    """keepalived's word splitter: blanks separate words, a "quoted string" is one word."""
    words: list[str] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] in WHITE:
            i += 1
            continue
        if text[i] == '"':
            end = text.find('"', i + 1)
            if end < 0:
                raise ConfigError(f"Unmatched quote: '{text}'", file, line)
            words.append(text[i + 1:end])
            i = end + 1
            continue
        start = i
        while i < n and text[i] not in WHITE and text[i] != '"':
            i += 1
        words.append(text[start:i])
    return words


_ESCAPES = {"a": "\a", "b": "\b", "E": "\x1b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


def split_command(text: str) -> list[str]:
    """Split a script command line with shell-like quotes ('..' and "..") and backslash escapes."""
    words: list[str] = []
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in WHITE:
            i += 1
        if i >= n:
            break
        word: list[str] = []
        quote = ""
        while i < n and (quote or text[i] not in WHITE):
            c = text[i]
            if c == "\\" and i + 1 < n:
                i, ch = _escape(text, i + 1)
                word.append(ch)
                continue
            if quote and c == quote:
                quote = ""
            elif not quote and c in "\"'":
                quote = c
            else:
                word.append(c)
            i += 1
        if quote:
            raise ValueError(f"String '{text}': missing terminating {quote}")
        words.append("".join(word))
    return words


def _escape(text: str, i: int) -> tuple[int, str]:
    c = text[i]
    if c == "x" and i + 1 < len(text) and text[i + 1] in "0123456789abcdefABCDEF":
        j = i + 1
        while j < len(text) and j < i + 3 and text[j] in "0123456789abcdefABCDEF":
            j += 1
        return j, chr(int(text[i + 1:j], 16))
    if c in "01234567":
        j = i
        while j < len(text) and j < i + 3 and text[j] in "01234567":
            j += 1
        return j, chr(int(text[i:j], 8))
    return i + 1, _ESCAPES.get(c, c)


def expand_braces(pattern: str) -> list[str]:
    """csh brace expansion, as glob(3) with GLOB_BRACE: a{b,c}d -> abd acd."""
    depth, start = 0, -1
    for i, c in enumerate(pattern):
        if c == "{":
            if depth == 0:
                start = i
            depth += 1
        elif c == "}" and depth:
            depth -= 1
            if depth == 0:
                options, level, cur = [], 0, []
                for ch in pattern[start + 1:i]:
                    if ch == "," and level == 0:
                        options.append("".join(cur))
                        cur = []
                        continue
                    level += ch == "{"
                    level -= ch == "}"
                    cur.append(ch)
                options.append("".join(cur))
                head, tail = pattern[:start], pattern[i + 1:]
                return [x for opt in options for x in expand_braces(head + opt + tail)]
    return [pattern]


# -- file level -------------------------------------------------------------------------------

def _substitute(text: str, state: _State, depth: int = 0) -> list[str]:
    """Replace $NAME and ${NAME}, again in the result (definitions may use definitions); a
    multi-line definition that ends the line adds its other lines after it."""
    if "$" not in text or not state.defs or depth > 16:
        return [text]
    extra: list[str] = []

    def repl(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        d = state.defs.get(name)
        if d is None:
            return m.group(0)
        if len(d.lines) > 1 and m.end() == len(text):
            extra.extend(d.lines[1:])
        return d.lines[0] if d.lines else ""

    replaced = _REF_RE.sub(repl, text)
    if replaced == text and not extra:
        return [text]
    return [out for line in (replaced, *extra) for out in _substitute(line, state, depth + 1)]


def _logical_lines(raw_lines: list[str], path: str, state: _State) -> Iterator[tuple[str, int]]:
    """Decommented, substituted, condition-filtered text lines of one file (no includes yet)."""
    pending: _Definition | None = None
    for lineno, raw in enumerate(raw_lines, 1):
        text, cont = decomment(raw.rstrip("\r\n"))
        if pending is not None:
            if text:
                pending.lines.append(text)
            if not cont:
                pending = None
            continue
        if not text:
            continue
        if text.startswith("@"):
            text = _conditional(text, state.config_id)
            if not text:
                continue
        m = _DEF_RE.match(text)
        if m:
            value = m.group(2).strip(BLANK)
            d = _Definition([value] if value else [])
            state.defs[m.group(1)] = d
            pending = d if cont else None
            continue
        if cont:
            state.diags.add(f"Missing escape char at end: '{text}\\'", path, lineno)
        if text.startswith("~SEQ"):
            state.diags.add(f"~SEQ is not supported - ignoring '{text}'", path, lineno)
            continue
        for sub in _substitute(text, state):
            yield sub, lineno


def _conditional(text: str, config_id: str | None) -> str:
    """`@id line` is kept only on that config id, `@^id line` everywhere else."""
    negate = text.startswith("@^")
    body = text[2:] if negate else text[1:]
    cut = min((i for i in (body.find(" "), body.find("\t")) if i >= 0), default=-1)
    if cut < 0:
        return ""
    matches = config_id is not None and body[:cut] == config_id
    return body[cut:].lstrip(BLANK) if matches != negate else ""


def _include(words: list[str], base: str, file: str, line: int, state: _State, depth: int) -> Iterator[Line]:
    kind, pattern = words
    if not os.path.isabs(pattern):
        pattern = os.path.normpath(os.path.join(base, pattern))
    matches = sorted({m for p in expand_braces(pattern) for m in glob.glob(p)})
    files = [m for m in matches if not os.path.isdir(m)]
    if not files:
        level = "warning" if kind in ("include", "includer") else "error"
        state.diags.add(f"No config files matched '{words[1]}'.", file, line, level)
        return
    for match in files:
        if kind in ("includer", "includea") and not os.access(match, os.R_OK):
            state.diags.add(f"Unable to read configuration file {match}", file, line, "error")
            continue
        yield from _read(match, state, depth + 1)


def _read(path: str, state: _State, depth: int) -> Iterator[Line]:
    if depth > MAX_INCLUDE_DEPTH:
        raise ConfigError(f"include depth exceeds {MAX_INCLUDE_DEPTH} (include loop?) at '{path}'")
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        if depth == 0:
            raise ConfigError(f"Unable to find configuration file {path} ({exc.strerror})") from None
        state.diags.warn(f"Configuration file '{path}' open problem ({exc.strerror}) - skipping")
        return
    if mode & 0o111 or not os.path.isfile(path):
        if depth == 0:
            raise ConfigError(f"Configuration file '{path}' is not a regular non-executable file")
        state.diags.warn(f"Configuration file '{path}' is not a regular non-executable file - skipping")
        return
    with open(path, encoding="utf-8", errors="replace", newline="") as fh:
        raw_lines = _split_lines(fh.read())
    state.files.append(path)
    yield from _statements(raw_lines, path, os.path.dirname(path), state, depth)


def _split_lines(text: str) -> list[str]:
    """Lines end at newline only, as fgets reads them (a lone CR, FF, VT or U+2028 does not end one)."""
    lines = text.split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


def _statements(raw_lines: list[str], path: str, base: str, state: _State, depth: int) -> Iterator[Line]:
    for text, lineno in _logical_lines(raw_lines, path, state):
        if text.startswith("include"):  # before brace splitting: a glob may hold {a,b}
            words = split_words(text, path, lineno)
            if len(words) == 2 and words[0] in INCLUDES:
                yield from _include(words, base, path, lineno, state, depth)
                continue
        for piece in split_braces(text):
            words = split_words(piece, path, lineno)
            if words:
                yield Line(words, path, lineno)


def read_lines(path: str, diags: Diagnostics, config_id: str | None = None,
               files: list[str] | None = None) -> list[Line]:
    """All statements of a configuration, includes expanded, in reading order."""
    state = _State(diags, config_id)
    lines = list(_read(path, state, 0))
    if files is not None:
        files.extend(state.files)
    return lines


def read_text_lines(text: str, name: str, diags: Diagnostics, base: str = ".",
                    config_id: str | None = None) -> list[Line]:
    """As `read_lines` for configuration text held in memory (includes relative to `base`)."""
    return list(_statements(_split_lines(text), name, base, _State(diags, config_id), 0))
