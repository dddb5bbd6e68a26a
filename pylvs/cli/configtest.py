"""`lvsd --config-test` (`-t`): read the files lvsd would start from, say what is wrong, show the table.

Nothing here needs root or touches the network: the files are parsed and validated by the code lvsd
starts with, and the table is built in an engine without interfaces. The table is printed as
`ipvsadm -S -n` rules, the very lines `lvsadm -S -n` prints once lvsd runs: unlike a `-L -n`
listing they carry persistence, netmasks, flags and tunnel options and no counters (which mean
nothing before start), they diff against `ipvsadm -S -n` on a host running the kernel's IPVS,
and `lvsd --config` and `lvsadm -R` read them. As in ipvsadm 1.31, thresholds (-x/-y) are not
part of that form.

Exit codes follow `keepalived -t` (2.2.7 as reference, see tests/data/configtest/):
  0  nothing to report (`pylvs:` notes about deliberate differences do not count);
  5  keepalived's KEEPALIVED_EXIT_CONFIG_TEST: messages keepalived reports as configuration
     errors (lvsd would still start, ignoring or defaulting what they name);
  4  keepalived's KEEPALIVED_EXIT_CONFIG: lvsd would refuse to start (a missing file, a keyword
     without its parameter, an unmatched quote; lvsd exits 4 on these too);
  1  an ipvsadm-save file (--config) lvsd could not load: lvsd's own exit code for it.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field

from pylvs import keepalived
from pylvs.control import api, config_file
from pylvs.control.keepalived_runner import EXIT_CONFIG
from pylvs.engine.engine import Engine
from pylvs.health.pool import Runtime
from pylvs.keepalived import translate
from pylvs.keepalived.errors import Diagnostic, Diagnostics

EXIT_OK = 0
EXIT_CONFIG_FILE = 1   # lvsd's exit code when --config cannot be loaded
EXIT_CONFIG_TEST = 5   # KEEPALIVED_EXIT_CONFIG_TEST
# keepalived logs these with log_message, not report_config_error, so `keepalived -t` still exits 0;
# "pylvs:" lines are pylvs's notes on what it accepts on purpose.
NOT_CONFIG_ERRORS = ("pylvs:", "No config files matched", "Configuration file ")


@dataclass
class Verdict:
    code: int = EXIT_OK
    messages: list[str] = field(default_factory=list)  # for stderr, in keepalived's form
    table: str = ""  # the rules lvsd would hold, `ipvsadm -S -n` form
    services: int = 0
    real_servers: int = 0
    checkers: int = 0

    @property
    def ok(self) -> bool:
        return self.code == EXIT_OK

    def fail(self, code: int, message: str) -> Verdict:
        """A problem that stops lvsd from starting."""
        self.code = code
        self.messages.append(message)
        return self


def keepalived_form(message: str, file: str | None, line: int | None) -> str:
    """A message as `keepalived -t` prints it: `(FILE: Line N) message`."""
    if file and line:
        return f"({file}: Line {line}) {message}"
    if line:
        return f"(Line {line}) {message}"
    return message


def _counts(diag: Diagnostic) -> bool:
    return not diag.message.startswith(NOT_CONFIG_ERRORS)


def check(config: str | None = None, keepalived_conf: str | None = None, config_id: str | None = None,
          save_config: bool = False) -> Verdict:
    """What lvsd would build from `--config` and/or `--keepalived`, in the order lvsd loads them."""
    verdict = Verdict()
    engine = Engine(routes=None)
    if config is not None and (os.path.exists(config) or not save_config):  # as lvsd at start
        try:
            config_file.load(engine, config)
        except config_file.ConfigFileError as exc:
            return verdict.fail(EXIT_CONFIG_FILE, f"lvsd: {exc}")  # as lvsd prints it at start
    if keepalived_conf is not None:
        _check_keepalived(engine, keepalived_conf, config_id, verdict)
        if verdict.code == EXIT_CONFIG:
            return verdict
    verdict.table = config_file.render(engine)
    verdict.services = len(engine.table)
    verdict.real_servers = sum(len(svc.dests) for svc in engine.table)
    return verdict


def _check_keepalived(engine: Engine, path: str, config_id: str | None, verdict: Verdict) -> None:
    try:
        parsed = keepalived.load(path, config_id, echo=False)
    except keepalived.ConfigError as exc:
        verdict.fail(EXIT_CONFIG, keepalived_form(exc.message, exc.file, exc.line))
        return
    diags = Diagnostics(list(parsed.diagnostics), echo=False)
    requests = translate.build(parsed, diags)
    for diag in diags.items:
        verdict.messages.append(keepalived_form(diag.message, diag.file, diag.line))
        if _counts(diag):
            verdict.code = max(verdict.code, EXIT_CONFIG_TEST)
    answer = api.handle(engine, translate.batch(requests))
    if not answer["ok"]:  # what keepalived accepted but lvsd cannot hold
        verdict.fail(EXIT_CONFIG, f"pylvs: the table cannot be built: {answer.get('error') or answer.get('errno')}")
        return
    verdict.checkers = len(Runtime(parsed).checkers())


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def summary(verdict: Verdict, files: list[str]) -> str:
    """The last line of a config test, for stderr."""
    what = " and ".join(files)
    if verdict.code == EXIT_OK:
        counts = [_count(verdict.services, "virtual service"), _count(verdict.real_servers, "real server")]
        if verdict.checkers:
            counts.append(_count(verdict.checkers, "health checker"))
        return f"lvsd: {what}: test is successful ({', '.join(counts)})"
    if verdict.code == EXIT_CONFIG_TEST:
        return f"lvsd: {what}: test failed: configuration errors (lvsd would start, doing what the messages say)"
    return f"lvsd: {what}: test failed: lvsd would not start"


def run(args: argparse.Namespace) -> int:
    """`lvsd -t`: problems and the summary on stderr, the table on stdout (with -q: only problems)."""
    files = [f for f in (args.config, args.keepalived) if f]
    if not files:
        print("lvsd: --config-test needs --config FILE or --keepalived FILE", file=sys.stderr)
        return 2
    verdict = check(args.config, args.keepalived, args.config_id, args.save_config)
    for message in verdict.messages:
        print(message, file=sys.stderr)
    if not args.quiet:
        sys.stdout.write(verdict.table)
        sys.stdout.flush()
    if not args.quiet or not verdict.ok:
        print(summary(verdict, files), file=sys.stderr)
    return verdict.code
