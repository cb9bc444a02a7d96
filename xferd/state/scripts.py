"""The Lua scripts, loaded: one file per state transition in ``lua/``, shared functions in
``lua/includes/``, and the one reply envelope they all answer in (``records.Reply``).

A script's header declares the keys and arguments it takes, by name::

    --[[ What it does ...
      KEYS room rounds writing sessions...
      ARGV room round entry consumer lease_ms
      Returns ok | redo | stale ...
    ]]
    --@include holder

and the loader derives both sides from that one declaration: the script gets ``K.room``,
``K.sessions`` (a trailing ``...`` takes the rest, as a list), ``A.round``...; ``Store``
builds the KEYS in that order from the names (``key_names``). Each script is prefixed with
the constants of ``room.py`` (statuses, transitions, deadlines, verdicts, bounds) and the
includes it names, each declaring the keys its functions use (``--@keys``): a script that
includes a function without declaring its keys does not load.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from xferd.protocol.status import Status
from xferd.settings import POLICY
from xferd.state import room as declared
from xferd.state.keys import GROUP, KEPT


# ---- the constants every script starts with, from the declaration
def _lua(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, dict):
        return "{" + ", ".join(f"[{_lua(k)}] = {_lua(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "{" + ", ".join(_lua(v) for v in value) + "}"
    raise TypeError(value)


@lru_cache(maxsize=1)
def constants() -> tuple[dict[str, str], dict[str, str]]:
    """The declaration for Lua: (names folded into the text at load, ``STATUS.Success`` ->
    ``4``; tables a script builds when it runs, name -> definition)."""
    folded = {"GROUP": _lua(GROUP)}
    folded.update({f"STATUS.{s.name}": str(int(s)) for s in Status})
    folded.update({f"KEPT.{name}": str(n) for name, n in KEPT.items()})
    moves = {f"{int(before)}>{int(a)}": True for before, after in declared.allowed_moves().items() for a in after}
    tables = {
        "STATUS_NAME": {int(s): s.name for s in Status},
        "MOVES": moves,  # 'from>to' of every declared transition
        "DEADLINES": {d.phase: {"start": d.start, "policy": d.policy, "reason": d.reason} for d in declared.DEADLINES},
        # what refresh_deadline reads: the phases' conditions, then their start fields
        "DEADLINE_FIELDS": ["status", "required_dst_info_num", "dst_count", "total_tokens", "round", "queued_round",
                            *dict.fromkeys(d.start for d in declared.DEADLINES)],
        "POLICY_FIELDS": list(POLICY),
        "BUCKETS": list(declared.BUCKETS),
    }
    return folded, {name: f"local {name} = {_lua(value)}" for name, value in tables.items()}


_FOLDED = re.compile(r"\b(GROUP|STATUS\.\w+|KEPT\.\w+)\b")


def fold(code: str, script: str = "") -> str:
    """``code`` with every declared constant written in as its value; an undeclared one
    (``STATUS.Sucess``) stops the load."""
    folded = constants()[0]

    def value(match: re.Match) -> str:
        if match.group(1) not in folded:
            raise ValueError(f"{script or 'a script'} names {match.group(1)}, which room.py does not declare")
        return folded[match.group(1)]
    return _FOLDED.sub(value, code)


def lua_constants(code: str) -> str:
    """The tables ``code`` names; each is built every time the script runs, so a script
    builds only those it reads."""
    return "".join(line + "\n" for name, line in constants()[1].items() if re.search(rf"\b{name}\b", code))


# ---- parsing a script and its includes
_KEYS = re.compile(r"^\s*KEYS\s+(.+)$", re.M)
_ARGV = re.compile(r"^\s*ARGV\s+(.+)$", re.M)
_INCLUDE = re.compile(r"^--@include\s+([\w ]+?)\s*$", re.M)
_NEEDS = re.compile(r"^--@keys\s+(.*)$", re.M)
_NAME = re.compile(r"^[a-z_]+(\.\.\.)?$")


def _header(text: str) -> str:
    return text.split("]]", 1)[0] if text.startswith("--[[") else ""


def _names(pattern: re.Pattern, header: str, script: str, what: str) -> tuple[str, ...]:
    found = pattern.search(header)
    if not found:
        raise ValueError(f"{script}.lua declares no {what} in its header")
    names = tuple(found.group(1).split())
    bad = [n for n in names if not _NAME.match(n)] + [n for n in names[:-1] if n.endswith("...")]
    if bad or len(set(names)) != len(names):
        raise ValueError(f"{script}.lua: bad {what} names {names}")
    return names


_PRELUDE = """-- generated at load: the declaration's constants (xferd/state/room.py), this script's KEYS and ARGV by name
local unpack = unpack or table.unpack
local STRICT = {__index = function(_, name) error('the script declares no ' .. tostring(name)) end}
"""


def _bind(table: str, source: str, names: tuple[str, ...]) -> str:
    """``local K = setmetatable({room = KEYS[1], ...}, STRICT)`` for the declared names."""
    items = []
    for i, name in enumerate(names, start=1):
        if name.endswith("..."):
            items.append(f"{name[:-3]} = {{unpack({source}, {i})}}")
        else:
            items.append(f"{name} = {source}[{i}]")
    return f"local {table} = setmetatable({{{', '.join(items)}}}, STRICT)\n"


def _folder():
    return resources.files("xferd.state") / "lua"


def _includes(text: str, found: dict[str, str]) -> dict[str, str]:
    """The includes ``text`` names, name -> text, dependencies first, each once."""
    for name in (n for line in _INCLUDE.findall(text) for n in line.split()):
        if name not in found:
            included = (_folder() / "includes" / f"{name}.lua").read_text()
            _includes(included, found)
            found[name] = included
    return found


@dataclass(frozen=True)
class Script:
    name: str
    keys: tuple[str, ...]  # KEYS by name, in order ('sessions...': the rest)
    argv: tuple[str, ...]
    source: str  # the whole script as Redis runs it


def load(name: str) -> Script:
    body = (_folder() / f"{name}.lua").read_text()
    header = _header(body)
    keys = _names(_KEYS, header, name, "KEYS")
    argv = _names(_ARGV, header, name, "ARGV")
    includes = _includes(body, {})
    declared_keys = {k.rstrip(".") for k in keys}
    for include, text in includes.items():
        for line in _NEEDS.findall(text):
            missing = set(line.split()) - declared_keys
            if missing:
                raise ValueError(f"{name}.lua includes {include}, whose functions use keys "
                                 f"{sorted(missing)} it does not declare")
    code = fold("".join(f"-- includes/{i}.lua\n{t}\n" for i, t in includes.items())
                + f"-- {name}.lua\n{body}", name)
    source = _PRELUDE + lua_constants(code) + _bind("K", "KEYS", keys) + _bind("A", "ARGV", argv) + code
    return Script(name, keys, argv, source)


def names() -> tuple[str, ...]:
    return tuple(sorted(p.name[:-4] for p in _folder().iterdir() if p.name.endswith(".lua")))
