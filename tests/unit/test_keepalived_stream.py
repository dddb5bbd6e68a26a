"""How keepalived 2.2.7 groups statements into blocks, and what it says while doing so.

keepalived's reader (lib/parser.c process_stream) opens a block only after a keyword its tables
give one, and any `}` ends the block being read. Each expected result below (the table and the
messages, in order) is what `keepalived -t` (Debian's keepalived 1:2.2.7-1+b2) reported for the
same text in its checker process, and what that process builds by its source.
"""

from __future__ import annotations

import os

from pylvs.keepalived import load, loads
from pylvs.keepalived.model import Config

NBSP = "\u00a0"


def table(config: Config) -> list[tuple]:
    """Virtual servers as (address, port, scheduler, [(real server, port, weight)])."""
    return [(vs.addr, vs.port, vs.scheduler, [(rs.addr, rs.port, rs.weight) for rs in vs.real_servers])
            for vs in config.virtual_servers]


def parse_messages(config: Config) -> list[str]:
    return [str(d) for d in config.diagnostics]


def test_unknown_block_keyword_keeps_its_braces_and_ends_the_enclosing_block():
    # a misspelt SMTP_CHECK: its lines become real_server keywords (connect_timeout is one,
    # helo_name is not), its `}` ends the real server, the real server's `}` ends the virtual
    # server, so `weight 5` is the virtual server's default weight and the second real server
    # is read at the top level, where nothing in it is known.
    config = loads("""virtual_server 192.0.2.100 80 {
    lvs_sched rr
    lvs_method NAT
    protocol TCP
    real_server 192.0.2.11 8080 {
        weight 2
        SMTP_CHEKC {
            connect_timeout 3
            helo_name foo
        }
        weight 5
    }
    real_server 192.0.2.12 8080 {
        weight 3
    }
}
""", echo=False)
    assert table(config) == [("192.0.2.100", 80, "rr", [("192.0.2.11", 8080, 2)])]
    vs = config.virtual_servers[0]
    assert vs.weight == 5 and vs.real_servers[0].connect_timeout == 3 and vs.real_servers[0].checkers == []
    assert parse_messages(config) == [
        "(keepalived.conf:7) Unknown keyword 'SMTP_CHEKC'",
        "(keepalived.conf:7) Unexpected '{' - ignoring",
        "(keepalived.conf:9) Unknown keyword 'helo_name'",
        "(keepalived.conf:13) Unknown keyword 'real_server'",
        "(keepalived.conf:13) Unexpected '{' - ignoring",
        "(keepalived.conf:14) Unknown keyword 'weight'",
        "(keepalived.conf:15) Unknown keyword '}'",
        "(keepalived.conf:16) Unknown keyword '}'",
    ]


def test_nested_unknown_blocks_and_a_missing_open_brace():
    config = loads("""virtual_server 192.0.2.100 80 {
    lvs_sched rr
    protocol TCP
    real_server 192.0.2.11 80 {
        HTTP_GTE {
            url {
                path /
            }
            connect_timeout 4
        }
        weight 7
    }
    real_server 192.0.2.12 80 {
        weight 3
    }
}
virtual_server 192.0.2.101 80 {
    protocol TCP
    real_server 192.0.2.13 80
    {
        weight 4
    }
    real_server 192.0.2.14 80
        weight 5
    }
    lvs_sched wrr
}
""", echo=False)
    # `url {`'s `}` (line 8) ends the real server, HTTP_GTE's (line 10) the virtual server.
    # A block keyword without its `{` still reads its block, up to the next `}`.
    assert table(config) == [("192.0.2.100", 80, "rr", [("192.0.2.11", 80, 1)]),
                             ("192.0.2.101", 80, "wrr", [("192.0.2.13", 80, 4), ("192.0.2.14", 80, 5)])]
    assert config.virtual_servers[0].connect_timeout == 4  # line 9 landed in the virtual server
    assert parse_messages(config)[:14] == [
        "(keepalived.conf:5) Unknown keyword 'HTTP_GTE'",
        "(keepalived.conf:5) Unexpected '{' - ignoring",
        "(keepalived.conf:6) Unknown keyword 'url'",
        "(keepalived.conf:6) Unexpected '{' - ignoring",
        "(keepalived.conf:7) Unknown keyword 'path'",
        "(keepalived.conf:11) Unknown keyword 'weight'",
        "(keepalived.conf:12) Unknown keyword '}'",
        "(keepalived.conf:13) Unknown keyword 'real_server'",
        "(keepalived.conf:13) Unexpected '{' - ignoring",
        "(keepalived.conf:14) Unknown keyword 'weight'",
        "(keepalived.conf:15) Unknown keyword '}'",
        "(keepalived.conf:16) Unknown keyword '}'",
        "(keepalived.conf:24) Missing '{' at beginning of configuration block",
        "(keepalived.conf:27) Extra '}' found",
    ]


def test_no_break_space_is_part_of_a_word():
    config = loads(f"""virtual_server 192.0.2.100 80 {{
    lvs_sched{NBSP}rr
    lvs_method NAT
    protocol TCP
{NBSP}{NBSP}  weight 9
    real_server{NBSP}192.0.2.11 80 {{
        weight 2
    }}
    real_server 192.0.2.12 80 {{
        weight{NBSP}3
        weight 4 {NBSP}
    }}
}}
""", echo=False)
    # `lvs_sched rr` is one unknown keyword, an indent of no-break spaces is a keyword of its own,
    # and `real_server 192.0.2.11` is unknown, so its block's `}` ends the virtual server, which
    # has no real server left and is dropped.
    assert table(config) == []
    assert parse_messages(config) == [
        f"(keepalived.conf:2) Unknown keyword 'lvs_sched{NBSP}rr'",
        f"(keepalived.conf:5) Unknown keyword '{NBSP}{NBSP}'",
        f"(keepalived.conf:6) Unknown keyword 'real_server{NBSP}192.0.2.11'",
        "(keepalived.conf:6) Unexpected '{' - ignoring",
        "(keepalived.conf:9) Unknown keyword 'real_server'",
        "(keepalived.conf:9) Unexpected '{' - ignoring",
        f"(keepalived.conf:10) Unknown keyword 'weight{NBSP}3'",
        "(keepalived.conf:11) Unknown keyword 'weight'",
        "(keepalived.conf:12) Unknown keyword '}'",
        "(keepalived.conf:13) Unknown keyword '}'",
        "(keepalived.conf:1) Virtual server [192.0.2.100]:tcp:80 has no real servers - ignoring",
    ]


def test_stray_braces_at_top_level_are_logged_and_the_rest_still_runs():
    config = loads("""}
global_defs {
    router_id A
}
}
virtual_server 192.0.2.100 80 {
    lvs_sched rr
    lvs_method NAT
    protocol TCP
    real_server 192.0.2.11 80 {
        weight 2
    }
}
{
    lvs_sched wrr
}
vrrp_instance VI_1 {
    state MASTER
    track_script {
        chk
    }
    virtual_ipaddress {
        192.0.2.100
    }
}
virtual_server 192.0.2.101 80 {
    lvs_sched rr
    lvs_method NAT
    protocol TCP
    real_server 192.0.2.12 80 {
        weight 1
""", echo=False)
    # the last virtual server is cut short by the end of the file: keepalived closes its blocks
    assert table(config) == [("192.0.2.100", 80, "rr", [("192.0.2.11", 80, 2)]),
                             ("192.0.2.101", 80, "rr", [("192.0.2.12", 80, 1)])]
    assert config.global_defs.router_id == "A"
    assert config.vrrp_instances["VI_1"].virtual_ipaddress == ["192.0.2.100"]
    assert parse_messages(config) == [
        "(keepalived.conf:1) Extra '}' found",
        "(keepalived.conf:1) Unknown keyword '}'",
        "(keepalived.conf:5) Extra '}' found",
        "(keepalived.conf:5) Unknown keyword '}'",
        "(keepalived.conf:14) Unexpected '{' - ignoring",
        "(keepalived.conf:15) Unknown keyword 'lvs_sched'",
        "(keepalived.conf:16) Unknown keyword '}'",
        "There are 2 missing '}'s or extra '{'s",
    ]


def test_a_bad_block_header_skips_the_block_by_counting_braces():
    # keepalived's skip_block: nothing inside is read, not even the unknown block's braces
    config = loads("""virtual_server 192.0.2.100 80 {
    lvs_sched rr
    lvs_method NAT
    protocol TCP
    real_server 192.0.2.300 80 {
        BOGUS {
            weight 3
        }
    }
    real_server 192.0.2.11 80 {
        weight 2
    }
}
""", echo=False)
    assert table(config) == [("192.0.2.100", 80, "rr", [("192.0.2.11", 80, 2)])]
    assert config.warnings == ["(keepalived.conf:5) Invalid real server ip address/port 192.0.2.300/80 - skipping"]


DATA = os.path.join(os.path.dirname(__file__), "..", "data", "keepalived", "broken")


def test_unbalanced_files_are_read_as_keepalived_reads_them():
    # one `}` short: the blocks still open at the end are closed, the TCP_CHECK is kept
    config = load(os.path.join(DATA, "unbalanced_open.conf"), echo=False)
    assert table(config) == [("10.0.0.1", 80, "rr", [("10.1.0.1", 80, 1)])]
    assert config.virtual_servers[0].real_servers[0].checkers[0].connect_timeout == 3
    assert config.warnings == ["There are 1 missing '}'s or extra '{'s"]
    path = os.path.join(DATA, "extra_close.conf")
    config = load(path, echo=False)
    assert table(config) == [("10.0.0.1", 80, "rr", [("10.1.0.1", 80, 1)])]
    assert config.warnings == [f"({path}:9) Extra '}}' found", f"({path}:9) Unknown keyword '}}'"]


def test_global_defs_extent_is_the_checkers_its_contents_the_parents():
    # keepalived's checker process skips global_defs by counting braces, so a stray `{` in it
    # swallows the rest of the file; its parent reads the block by keywords (and logs the `{`)
    config = loads("""global_defs {
   router_id LVS_DEVEL
{
}
virtual_server 10.0.0.1 80 {
    lvs_sched rr
    protocol TCP
    real_server 10.0.0.2 80 {
    }
}
""", echo=False)
    assert config.global_defs.router_id == "LVS_DEVEL" and table(config) == []
    assert parse_messages(config) == ["(keepalived.conf:3) Unexpected '{' - ignoring",
                                      "There are 1 missing '}'s or extra '{'s"]
