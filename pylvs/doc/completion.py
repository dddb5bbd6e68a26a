"""Bash completion for a Program read from its parser: its options, and their arguments where there
is something to offer (choices, files, network interfaces, the virtual services lvsd has now)."""

from __future__ import annotations

import shlex

from pylvs.doc.model import FILE, INTERFACE, SERVICE, Option, Program

INTERFACES = '$(ls /sys/class/net 2>/dev/null)'


def _function_name(program: Program) -> str:
    return "_pylvs_" + program.name.replace("-", "_").replace(" ", "_")


def _words(values: list[str]) -> str:
    return shlex.quote(" ".join(values))


def _argument(option: Option) -> str | None:
    """The COMPREPLY for the word after `option`, or None if it takes no argument."""
    if not option.takes_argument or option.metavar.startswith("["):  # an optional argument: offer options
        return None
    if option.choices:
        return f"COMPREPLY=($(compgen -W {_words(option.choices)} -- \"$cur\"))"
    if option.complete == FILE:
        return 'COMPREPLY=($(compgen -f -- "$cur"))'
    if option.complete == INTERFACE:
        return f'COMPREPLY=($(compgen -W "{INTERFACES}" -- "$cur"))'
    if option.complete == SERVICE:  # the way `lvsadm -S -n` writes this kind of service
        kind = next((f for f in option.flags if not f.startswith("--")), option.flags[0])
        services = f"$(lvsadm -S -n 2>/dev/null | awk -v k={kind} '$1 == \"-A\" && $2 == k {{print $3}}')"
        return f'COMPREPLY=($(compgen -W "{services}" -- "$cur"))'
    return "COMPREPLY=()"  # a number, an address: nothing sensible to offer


def _body(program: Program, indent: str) -> list[str]:
    """Complete one (sub)command: the argument of the previous option, else its options."""
    lines = [f'{indent}case "$prev" in']
    for option in program.options():
        reply = _argument(option)
        if reply is not None:
            lines.append(f"{indent}    {'|'.join(option.flags)}) {reply}; return ;;")
    lines.append(f"{indent}esac")
    flags = [f for option in program.options() for f in option.flags]
    lines.append(f'{indent}COMPREPLY=($(compgen -W {_words(flags)} -- "$cur"))')
    return lines


def render(program: Program) -> str:
    name = _function_name(program)
    lines = [f"# bash completion for {program.name}: generated from its parser by pylvs.doc (make man)",
             f"{name}() {{",
             '    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}" word i sub=""']
    if program.subcommands:
        names = list(program.subcommands)
        lines += ["    for ((i = 1; i < COMP_CWORD; i++)); do",
                  f"        for word in {' '.join(names)}; do",
                  '            [[ "${COMP_WORDS[i]}" == "$word" ]] && sub="$word"',
                  "        done",
                  "    done",
                  '    case "$sub" in']
        for sub_name, sub in program.subcommands.items():
            lines += [f"        {sub_name})"] + _body(sub, " " * 12) + ["            ;;"]
        top = [f for option in program.options() for f in option.flags]
        lines += ["        *)",
                  f'            COMPREPLY=($(compgen -W {_words(names + top)} -- "$cur"))',
                  "            ;;",
                  "    esac"]
    else:
        lines += _body(program, "    ")
    lines += ["}", f"complete -F {name} {program.name}"]
    return "\n".join(lines) + "\n"
