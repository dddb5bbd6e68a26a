"""keepalived.conf lexical rules (reference §0): comments, quotes, braces, includes, parameters."""

from __future__ import annotations

import os

import pytest

from pylvs.keepalived import ConfigError, Diagnostics, load, loads
from pylvs.keepalived.lexer import (
    decomment,
    expand_braces,
    read_text_lines,
    split_braces,
    split_command,
)

DATA = os.path.join(os.path.dirname(__file__), "..", "data", "keepalived")


def words(text: str, config_id: str | None = None) -> list[list[str]]:
    return [ln.words for ln in read_text_lines(text, "t.conf", Diagnostics(echo=False), config_id=config_id)]


def test_comments_start_anywhere_outside_double_quotes():
    assert decomment("router_id LVS # a comment") == ("router_id LVS", False)
    assert decomment("! whole line") == ("", False)
    # keepalived cuts at a '!' inside a word too: this is why k@l!ve1 needs an escape
    assert decomment("auth_pass k@l!ve1") == ("auth_pass k@l", False)
    assert decomment(r"auth_pass k@l\!ve1") == ("auth_pass k@l!ve1", False)
    assert decomment('misc_path "/bin/echo #not a comment" # but this is') == ('misc_path "/bin/echo #not a comment"',
                                                                              False)


def test_a_trailing_backslash_is_reported():
    assert decomment("value \\") == ("value", True)


def test_braces_split_lines_so_one_statement_per_line():
    assert split_braces("url { path /x }") == ["url", "{", "path /x", "}"]
    assert split_braces('misc_path "/bin/sh -c {x}" {') == ['misc_path "/bin/sh -c {x}"', "{"]
    assert words("real_server 10.0.0.1 80 { weight 2 }") == [["real_server", "10.0.0.1", "80"], ["{"],
                                                              ["weight", "2"], ["}"]]


def test_double_quoted_words_are_one_word_without_escapes():
    assert words('notify_up "/usr/bin/x.sh up now" nobody') == [["notify_up", "/usr/bin/x.sh up now", "nobody"]]
    assert words('regex "^a\\d+$"') == [["regex", "^a\\d+$"]]


def test_split_command_is_shell_like():
    assert split_command("/usr/local/bin/script.sh arg1 arg2") == ["/usr/local/bin/script.sh", "arg1", "arg2"]
    assert split_command("/bin/sh -c 'exit 3'") == ["/bin/sh", "-c", "exit 3"]
    assert split_command(r'/bin/echo "a \"b\"" c\ d \x41\101') == ["/bin/echo", 'a "b"', "c d", "AA"]
    with pytest.raises(ValueError, match="missing terminating"):
        split_command("/bin/echo 'oops")


def test_parameter_definitions_and_substitution():
    text = """
$PORT=8080
$RS=real_server 10.0.0.2 $PORT { \\
    weight 3 \\
}
virtual_server 10.0.0.1 ${PORT} {
    $RS
}
"""
    assert words(text) == [["virtual_server", "10.0.0.1", "8080"], ["{"], ["real_server", "10.0.0.2", "8080"],
                           ["{"], ["weight", "3"], ["}"], ["}"]]


def test_conditional_lines_follow_the_config_id():
    text = "@lb1 router_id ONE\n@lb2 router_id TWO\n@^lb1 smtp_server 10.0.0.9\n"
    assert words(text, "lb1") == [["router_id", "ONE"]]
    assert words(text, "lb2") == [["router_id", "TWO"], ["smtp_server", "10.0.0.9"]]
    assert words(text) == [["smtp_server", "10.0.0.9"]]


def test_brace_expansion_for_include_globs():
    assert expand_braces("a{b,c{d,e}}f") == ["abf", "acdf", "acef"]
    assert expand_braces("plain") == ["plain"]


@pytest.mark.parametrize("name, line, text", [
    ("missing_parameter.conf", 6, "*** Configuration line starting `weight` is missing a parameter after keyword "
                                  "`weight` at word position 2"),
    ("unterminated_quote.conf", 5, "Unmatched quote"),
])
def test_fatal_errors_carry_file_and_line(name, line, text):
    path = os.path.join(DATA, "broken", name)
    with pytest.raises(ConfigError) as err:
        load(path, echo=False)
    assert err.value.file == path and err.value.line == line
    assert text in str(err.value) and str(err.value).startswith(f"({path}:{line}) ")


def test_includes_are_relative_to_the_including_file():
    config = load(os.path.join(DATA, "include", "keepalived.conf"), echo=False)
    assert config.global_defs.router_id == "INCLUDED"
    keys = [vs.key for vs in config.virtual_servers]
    assert keys == [("addr", "10.0.0.10", 80, "TCP"), ("addr", "10.0.0.53", 53, "UDP"), ("fwmark", 11, None),
                    ("fwmark", 12, None)]
    # the include inside the virtual_server block (../extra relative to conf.d/) brought its real servers
    assert [(r.addr, r.weight) for r in config.virtual_servers[0].real_servers] == [("10.1.0.1", 1), ("10.1.0.2", 2)]
    rel = [os.path.relpath(f, os.path.join(DATA, "include")) for f in config.files]
    assert rel == ["keepalived.conf", "conf.d/10-web.conf", "extra/web-servers.inc", "conf.d/20-dns.conf",
                   "extra/one.conf", "extra/two.conf"]
    warnings = config.warnings
    assert any("keepalived.conf:7) No config files matched 'missing/*.conf'." in w for w in warnings)
    assert any("20-dns.conf:8) Unknown keyword 'bogus_keyword'" in w for w in warnings)


def test_executable_include_is_skipped(tmp_path):
    (tmp_path / "main.conf").write_text("include sub.conf\n")
    sub = tmp_path / "sub.conf"
    sub.write_text("global_defs {\n router_id X\n}\n")
    sub.chmod(0o755)
    config = load(str(tmp_path / "main.conf"), echo=False)
    assert config.global_defs.router_id is None
    assert any("not a regular non-executable file - skipping" in w for w in config.warnings)


def test_include_loop_is_fatal(tmp_path):
    (tmp_path / "a.conf").write_text("include b.conf\n")
    (tmp_path / "b.conf").write_text("include a.conf\n")
    with pytest.raises(ConfigError, match="include depth"):
        load(str(tmp_path / "a.conf"), echo=False)


def test_missing_main_file_is_fatal(tmp_path):
    with pytest.raises(ConfigError, match="Unable to find configuration file"):
        load(str(tmp_path / "nope.conf"), echo=False)


def test_white_space_is_keepaliveds_only():
    # space, tab, form feed, vertical tab and carriage return separate words; a no-break space
    # (U+00A0), an em space or U+2028 do not; only a newline ends a line
    assert words("a\tb\fc\vd\re") == [["a", "b", "c", "d", "e"]]
    assert words("weight\u00a03\nweight\u2003 4 \u00a0\nx\u2028y") == [
        ["weight\u00a03"], ["weight\u2003", "4", "\u00a0"], ["x\u2028y"]]
    # an indent of no-break spaces is a word of its own; a conditional needs a real blank
    assert words("\u00a0\u00a0weight 2") == [["\u00a0\u00a0weight", "2"]]
    assert words("@lb1\u00a0router_id ONE\n@lb1 router_id TWO", "lb1") == [["router_id", "TWO"]]



def test_numbers_as_the_keepalived_daemon_reads_them():
    # keepalived's readers stop at the first character that is not a digit (a no-break space is
    # not white space); the daemon logs "WARNING - invalid number" and uses the digits read when
    # they are in range (for a timer: as microseconds). `keepalived -t` gives the same messages
    # without "WARNING - ", and refuses the two integers (weight and port) instead, with one more
    # message each.
    config = loads("virtual_server 10.0.0.1 80 {\n lvs_sched rr\n lvs_method NAT\n protocol TCP\n"
                   " real_server 10.0.0.2 80 {\n  weight 5\u00a0\n  connect_timeout 1e3\n }\n"
                   " real_server 10.0.0.3 8\u00a0 {\n }\n}\n", echo=False)
    rs = config.virtual_servers[0].real_servers
    assert [(r.addr, r.port, r.weight) for r in rs] == [("10.0.0.2", 80, 5), ("10.0.0.3", 8, 1)]
    assert rs[0].connect_timeout == 0.000001
    assert [(d.line, d.message) for d in config.diagnostics] == [(6, "WARNING - invalid number '5\u00a0'"),
                                                                 (7, "WARNING - invalid number '1e3'"),
                                                                 (9, "WARNING - invalid number '8\u00a0'")]
