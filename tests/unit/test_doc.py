"""Man pages and bash completion come from the parsers: the shipped files match them, lvsadm's help
and its ipvsadm parser name the same options, and the completion offers what the parsers accept."""

from __future__ import annotations

import inspect
import io
import re
import shutil
import subprocess

import pytest

from pylvs.cli import lvs_rs, lvsadm, lvsd
from pylvs.doc import generate, model
from pylvs.ipvsadm import args as ipvsadm_args
from pylvs.ipvsadm.args import ParseError, parse_command


def test_the_shipped_pages_and_completions_are_what_the_parsers_give():
    assert generate.stale() == [], "share/ differs from the parsers: run `make man` and commit the result"


def test_check_mode_names_a_file_that_drifted(tmp_path, capsys):
    generate.write(str(tmp_path))
    assert generate.main(["--check", "--root", str(tmp_path)]) == 0
    page = tmp_path / generate.MAN_DIR / "lvsd.8"
    page.write_text(page.read_text().replace("config\\-test", "config\\-check"))
    assert generate.main(["--check", "--root", str(tmp_path)]) == 1
    assert capsys.readouterr().err == f"{generate.MAN_DIR}/lvsd.8: differs from the parsers (run: make man)\n"


def spellings() -> set[str]:
    return {f"--{s.long}" for s in ipvsadm_args._SPECS if s.long} | \
        {f"-{s.short}" for s in ipvsadm_args._SPECS if s.short}


def test_every_option_of_the_ipvsadm_parser_is_in_lvsadm_s_page():
    documented = {f for option in model.lvsadm_program().options() for f in option.flags}
    assert spellings() <= documented


class Daemon:
    """Answers lvsadm's extension requests with the least that is valid."""

    ANSWERS = {"get-keepalived": {"path": f"{generate.ROOT}/tests/data/configtest/good_vsg.conf", "config_id": None},
               "get-datapath": {"datapath": "python", "reason": "test"}, "list": {"services": []}}

    def request(self, obj: dict) -> dict:
        return {"ok": True, "result": self.ANSWERS.get(obj["op"], {})}


def test_lvsadm_s_own_options_are_the_ones_its_help_lists():
    extensions = {f for option in model.lvsadm_program().options() for f in option.flags} - spellings()
    assert extensions, "the help's lvsadm extensions section was not read"
    for flag in sorted(extensions - {"--control"}):  # --control takes a path, tested below
        err = io.StringIO()
        lvsadm.run([flag], transport=Daemon(), stdout=io.StringIO(), stderr=err)
        assert "Try `lvsadm -h'" not in err.getvalue(), f"{flag} is documented but lvsadm does not know it"
    # and the other way round: every option lvsadm's run() looks for is in its help
    source = inspect.getsource(lvsadm.run) + inspect.getsource(lvsadm.split_control)
    assert set(re.findall(r'"(--[a-z][a-z-]+)', source)) <= extensions


def parses(argv: list[str]) -> bool:
    try:
        parse_command(argv, "lvsadm")
    except ParseError:
        return False
    return True


def test_completion_choices_are_values_the_ipvsadm_parser_takes():
    options = {o.flags[0]: o for o in model.lvsadm_program().options()}
    svc = ["-t", "192.0.2.1:80"]
    for scheduler in options["--scheduler"].choices:
        assert parses(["-A", *svc, "-s", scheduler])
    for flag in options["--sched-flags"].choices:
        scheduler = flag.split("-")[0] if flag.startswith(("sh", "mh")) else "rr"
        assert parses(["-A", *svc, "-s", scheduler, "-b", flag]), flag
    for kind in options["--tun-type"].choices:
        port = ["--tun-port", "6080"] if kind == "gue" else []
        assert parses(["-a", *svc, "-r", "192.0.2.11", "-i", "--tun-type", kind, *port]), kind
    for state in options["--start-daemon"].choices:
        assert parses(["--start-daemon", state, "--mcast-interface", "eth0"])
        assert parses(["--stop-daemon", state])
    for version in options["--proxy-protocol"].choices:
        assert parses(["-A", *svc, "--proxy-protocol", version])
    assert parses(["-A", *svc, "--pe", *options["--pe"].choices])


@pytest.mark.parametrize("parser", [lvsd.parser(), lvs_rs.parser()], ids=["lvsd", "lvs-rs"])
def test_every_argparse_option_is_on_the_page_and_in_the_completion(parser):
    program = model.from_argparse(parser)
    pages = generate.files()
    page = pages[f"{generate.MAN_DIR}/{program.name}.8"]
    words = pages[f"{generate.COMPLETION_DIR}/{program.name}"]
    subparsers = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    actions = list(parser._actions) + [a for s in subparsers for p in s.choices.values() for a in p._actions]
    for action in actions:
        for flag in action.option_strings:
            assert "\\fB" + flag.replace("-", "\\-") + "\\fR" in page, flag
            assert f" {flag} " in words or f"'{flag} " in words or f" {flag}'" in words, flag
        if action.help and action.option_strings:
            assert action.help.split()[0].replace("-", "\\-") in page


def complete(tmp_path, program: str, line: str, lvsadm_save: str = "") -> list[str]:
    """What bash offers for `line` (completing its last word), with the shipped completion file."""
    words = line.split(" ")
    fake = tmp_path / "bin"
    fake.mkdir(exist_ok=True)
    (fake / "lvsadm").write_text(f"#!/bin/sh\nprintf '%s' '{lvsadm_save}'\n")
    (fake / "lvsadm").chmod(0o755)
    script = (f"source {generate.ROOT}/{generate.COMPLETION_DIR}/{program}\n"
              f"COMP_WORDS=({' '.join(repr(w) for w in words)}); COMP_CWORD={len(words) - 1}\n"
              f"_pylvs_{program.replace('-', '_')}; printf '%s\\n' \"${{COMPREPLY[@]}}\"\n")
    out = subprocess.run(["bash", "--norc", "-c", script], capture_output=True, text=True, timeout=30,
                         env={"PATH": f"{fake}:/usr/bin:/bin"}, check=True)
    return sorted(w for w in out.stdout.splitlines() if w)


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_bash_completes_options_and_their_arguments(tmp_path):
    assert complete(tmp_path, "lvsadm", "lvsadm -A -t 192.0.2.1:80 -s w") == ["wlc", "wrr"]
    assert complete(tmp_path, "lvsadm", "lvsadm --sch") == ["--sched-flags", "--scheduler"]
    assert complete(tmp_path, "lvsadm", "lvsadm --start-daemon ") == ["backup", "master"]
    assert complete(tmp_path, "lvsadm", "lvsadm -a -t ", "-A -t 192.0.2.1:80 -s rr\n-A -u 192.0.2.1:53 -s rr\n"
                    "-a -t 192.0.2.1:80 -r 192.0.2.11:80 -g -w 1\n") == ["192.0.2.1:80"]
    assert complete(tmp_path, "lvsadm", "lvsadm -w ") == []
    assert complete(tmp_path, "lvsd", "lvsd --datapath ") == ["auto", "bpf", "python"]
    assert complete(tmp_path, "lvsd", "lvsd --print-unit lvsd-") == ["lvsd-keepalived@.service"]
    assert "lo" in complete(tmp_path, "lvsd", "lvsd -i ")
    assert complete(tmp_path, "lvs-rs", "lvs-rs ") == sorted(["up", "down", "check", "decap", "-h", "--help"])
    assert complete(tmp_path, "lvs-rs", "lvs-rs up --method ") == ["dr", "tun"]
    assert "--decap" in complete(tmp_path, "lvs-rs", "lvs-rs up --")
    assert "--decap" not in complete(tmp_path, "lvs-rs", "lvs-rs down --")


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff is not installed")
@pytest.mark.parametrize("name", ["lvsd", "lvsadm", "lvs-rs"])
def test_the_pages_format_without_warnings(name):
    page = f"{generate.ROOT}/{generate.MAN_DIR}/{name}.8"
    r = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", page], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stderr == "", r.stderr
