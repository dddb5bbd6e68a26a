"""Man pages (roff, man(7) macros) for a Program read from its parser."""

from __future__ import annotations

from pylvs import __version__
from pylvs.doc.model import Option, Program

# What a parser cannot say: a short description, exit statuses, files and related pages.
EXTRA: dict[str, dict[str, str]] = {
    "lvsd": {
        "DESCRIPTION": "lvsd is the pylvs director: it owns the virtual services (what ipvsadm manages in the "
                       "kernel's IPVS), schedules new connections to real servers and forwards their packets "
                       "from AF_PACKET rings, with established flows in a tc BPF fast path where it loads. It "
                       "runs in the foreground in the current network namespace and is driven with lvsadm(8) "
                       "over its control socket, from an ipvsadm-save file (--config) or from keepalived.conf "
                       "(--keepalived). SIGHUP re-reads keepalived.conf; SIGTERM and SIGINT stop it, removing "
                       "its nftables rules and tc programs.",
        "EXIT STATUS": "0 on a clean stop; 1 when lvsd cannot start (missing privileges, interface, nft, an "
                       "ipvsadm-save file it cannot load); 2 for a wrong command line; 4 when keepalived.conf "
                       "cannot be used (keepalived's KEEPALIVED_EXIT_CONFIG). With --config-test: 0 when the "
                       "files are fine, 5 when keepalived -t would report configuration errors, 4 (1 for "
                       "--config) when lvsd would not start.",
        "SYSTEMD": "lvsd --print-unit lvsd.service (or lvsd-keepalived@.service) prints a unit for this "
                   "lvsd: Type=notify (READY=1 once the table is loaded and the rings are up, RELOADING=1 and "
                   "READY=1 around a SIGHUP reload, STOPPING=1), ExecReload sends SIGHUP, and a sandbox that "
                   "leaves lvsd the capabilities, sockets and /sys/fs/bpf it needs. Its options go in "
                   "/etc/default/lvsd as LVSD_OPTS. Under systemd, log lines carry syslog priorities.",
        "SEE ALSO": "lvsadm(8), lvs-rs(8), ipvsadm(8), keepalived(8), keepalived.conf(5), systemd.service(5)",
    },
    "lvsadm": {
        "DESCRIPTION": "lvsadm takes ipvsadm 1.31's command lines and prints its outputs byte for byte, but "
                       "talks to lvsd(8) over its control socket instead of to the kernel. Error messages and "
                       "exit codes are ipvsadm's. The options below are those of lvsadm -h, with every "
                       "spelling the parser accepts.",
        "SEE ALSO": "lvsd(8), lvs-rs(8), ipvsadm(8)",
    },
    "lvs-rs": {
        "DESCRIPTION": "lvs-rs prepares a host as a real server for LVS direct routing (DR) or tunneling (TUN): "
                       "the VIP on lo, the ARP sysctls that keep it quiet about the VIP, and tunnel "
                       "decapsulation (a kernel device, or a userspace decapsulator where the kernel has none). "
                       "It works in the current network namespace.",
        "SEE ALSO": "lvsd(8), lvsadm(8)",
    },
}


def escape(text: str) -> str:
    """Roff-safe text: backslashes, hyphens of options, and no line starting as a request."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + text if text.startswith((".", "'")) else text


def _option(option: Option) -> list[str]:
    flags = ", ".join(f"\\fB{escape(f)}\\fR" for f in option.flags)
    metavar = f" \\fI{escape(option.metavar)}\\fR" if option.metavar else ""
    return [".TP", flags + metavar, escape(option.help or "(no description)")]


def _program_body(program: Program, level: str) -> list[str]:
    lines: list[str] = []
    for section in program.sections:
        lines += [f".{level} {escape(section.title.upper() if level == 'SH' else section.title)}"]
        for option in section.options:
            lines += _option(option)
    return lines


def render(program: Program) -> str:
    extra = EXTRA.get(program.name, {})
    lines = [f'.TH {escape(program.name.upper())} 8 "" "pylvs {__version__}" "pylvs"',
             ".SH NAME", f"{escape(program.name)} \\- {escape(program.summary)}",
             ".SH SYNOPSIS"]
    for i, usage in enumerate(program.synopsis):
        lines += ([".br"] if i else []) + [escape(usage)]
    if "DESCRIPTION" in extra:
        lines += [".SH DESCRIPTION", escape(extra["DESCRIPTION"])]
    lines += _program_body(program, "SH")
    if program.subcommands:
        lines += [".SH COMMANDS"]
        for name, sub in program.subcommands.items():
            lines += [f".SS {escape(name)}", escape(sub.summary), ".PP", escape(sub.synopsis[0])]
            lines += [line for option in sub.options() for line in _option(option)]
    for title, text in extra.items():
        if title != "DESCRIPTION":
            lines += [f".SH {title}", escape(text)]
    return "\n".join(lines) + "\n"
