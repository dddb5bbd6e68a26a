"""The command lines of lvsd, lvs-rs and lvsadm, read from their parsers, for man pages and completion.

lvsd and lvs-rs are argparse parsers: their actions give flags, arguments, choices and help.
lvsadm parses as ipvsadm does (pylvs.ipvsadm.args): its options and their argument kinds come from
that parser's option table (`_SPECS`), their descriptions and the synopsis from the `-h` text the
same module prints, and lvsadm's own options from that text's "lvsadm extensions" section.
tests/unit/test_doc.py checks that the table and the text name the same options.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field

# How a shell completes an option's argument
FILE, INTERFACE = "file", "interface"
SERVICE = "service"  # a virtual service lvsd has now (from `lvsadm -S -n`)


@dataclass
class Option:
    flags: list[str]
    metavar: str = ""  # "" for a switch
    help: str = ""
    choices: list[str] = field(default_factory=list)
    complete: str = ""  # FILE, INTERFACE, SERVICE or "" (nothing to offer)

    @property
    def takes_argument(self) -> bool:
        return bool(self.metavar)


@dataclass
class Section:
    title: str
    options: list[Option] = field(default_factory=list)


@dataclass
class Program:
    name: str
    summary: str
    synopsis: list[str]
    sections: list[Section]
    subcommands: dict[str, Program] = field(default_factory=dict)

    def options(self) -> list[Option]:
        return [o for s in self.sections for o in s.options]


# -- argparse ------------------------------------------------------------------------------------

def _completion(action: argparse.Action) -> str:
    metavar = str(action.metavar or "").upper()
    if metavar in ("IF", "INTERFACE") or action.dest == "interface":
        return INTERFACE
    if metavar in ("FILE", "PATH", "DIR") or action.dest in ("pidfile", "state_dir"):
        return FILE
    return ""


def _argparse_option(action: argparse.Action, prog: str) -> Option:
    choices = [str(c) for c in action.choices] if action.choices else []
    metavar = ""
    if action.nargs != 0:
        mv = action.metavar or ("{" + ",".join(choices) + "}" if choices else action.dest.upper())
        metavar = " ".join(mv) if isinstance(mv, tuple) else mv
    help_text = action.help % dict(vars(action), prog=prog) if action.help else ""  # as argparse expands it
    return Option(list(action.option_strings), metavar, help_text, choices, _completion(action))


def from_argparse(parser: argparse.ArgumentParser, name: str | None = None) -> Program:
    name = name or parser.prog
    sections: list[Section] = []
    subcommands: dict[str, Program] = {}
    for group in parser._action_groups:  # argparse keeps no public view of its groups
        options = []
        for action in group._group_actions:
            if isinstance(action, argparse._SubParsersAction):
                helps = {a.dest: a.help or "" for a in action._choices_actions}
                for sub_name, sub in action.choices.items():
                    program = from_argparse(sub, f"{name} {sub_name}")
                    program.summary = helps.get(sub_name, "")
                    subcommands[sub_name] = program
            elif action.option_strings:
                options.append(_argparse_option(action, parser.prog))
        if options:
            title = "options" if group.title in ("optional arguments", "options") else group.title
            sections.append(Section(title or "options", options))
    usage = " ".join(parser.format_usage().split())
    return Program(name, parser.description or "", [usage.removeprefix("usage: ")], sections, subcommands)


# -- lvsadm --------------------------------------------------------------------------------------

_CONTINUED = re.compile(r"^ {20,}(\S.*)$")


def _help_entries(text: str) -> tuple[list[str], list[tuple[str, list[tuple[list[str], str, str]]]]]:
    """The synopsis lines and, per section, (flags, metavar, description) from ipvsadm-style help,
    where columns are separated by two spaces or more and the description comes last."""
    synopsis: list[str] = []
    sections: list[tuple[str, list[tuple[list[str], str, str]]]] = []
    part = ""
    for line in text.splitlines():
        if line == "Usage:":
            part = "usage"
        elif part == "usage" and line.startswith("  "):
            synopsis.append(line.strip())
        elif line.endswith(":") and not line.startswith(" "):
            part = "options"
            sections.append((line[:-1], []))
        elif part == "options" and (m := _CONTINUED.match(line)) and sections[-1][1]:
            flags, metavar, description = sections[-1][1][-1]
            sections[-1][1][-1] = (flags, metavar, f"{description} {m[1]}")
        elif part == "options" and line.startswith("  -"):
            *left, description = re.split(r" {2,}", line.strip())
            tokens = [t for word in " ".join(left).split() for t in word.split("|")]
            flags = [t for t in tokens if t.startswith("-")]
            metavar = " ".join(t for t in tokens if not t.startswith("-"))
            sections[-1][1].append((flags, metavar, description))
    return synopsis, sections


# What lvsadm accepts and its -h does not list (as in ipvsadm's -h); a new option needs help text.
NOT_IN_HELP = {"v": "print the version and exit"}


def _spellings(group: list) -> list[str]:
    return [f"--{s.long}" for s in group if s.long] + [f"-{s.short}" for s in group if s.short]


def lvsadm_program() -> Program:
    from pylvs.cli import lvsadm
    from pylvs.ipvsadm import args
    from pylvs.sched import SCHEDULERS

    specs: dict[str, list[args._OptSpec]] = {}
    for spec in args._SPECS:  # the ipvsadm parser's own option table
        specs.setdefault(spec.key, []).append(spec)
    by_flag = {f"--{s.long}" if s.long else f"-{s.short}": key for key, group in specs.items() for s in group}
    by_flag.update({f"-{s.short}": key for key, group in specs.items() for s in group if s.short})
    choices = {"s": list(SCHEDULERS), "tun-type": list(args._TUN_MATRIX), "start-daemon": ["master", "backup"],
               "stop-daemon": ["master", "backup"], "b": list(args.SCHED_FLAG_BITS), "pe": ["sip"],
               "proxy-protocol": ["v1", "v2", "disable"]}
    complete = {"t": SERVICE, "u": SERVICE, "sctp": SERVICE, "f": SERVICE, "mcast-interface": INTERFACE,
                "F": INTERFACE, "--control": FILE}
    synopsis, entries = _help_entries(lvsadm.usage("lvsadm"))
    sections, seen = [], set()
    for title, rows in entries:
        options = []
        for flags, metavar, description in rows:
            if flags[0] in seen:  # -h lists --control twice
                continue
            key = by_flag.get(flags[0])
            if key is not None:  # every spelling the parser accepts, long first
                group = specs[key]
                flags = _spellings(group)
                if group[0].arg == "required" and not metavar:
                    metavar = "{" + "|".join(choices[key]) + "}" if key in choices else "ARG"
            seen.update(flags)
            options.append(Option(flags, metavar, description, choices.get(key or "", []),
                                  complete.get(key or flags[0], "")))
        sections.append(Section(title, options))
    unlisted = [key for key in specs if not any(f in seen for f in _spellings(specs[key]))]
    sections.append(Section("Also accepted", [Option(_spellings(specs[key]), help=NOT_IN_HELP[key])
                                              for key in unlisted]))
    return Program("lvsadm", "an ipvsadm 1.31 drop-in that drives lvsd, the pylvs director", synopsis, sections)


def programs() -> list[Program]:
    from pylvs.cli import lvs_rs, lvsd

    return [from_argparse(lvsd.parser()), lvsadm_program(), from_argparse(lvs_rs.parser())]
