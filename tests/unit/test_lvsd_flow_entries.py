"""lvsd --flow-entries: the fast path's flow map size, checked as argparse checks (exit 2), and what
lvsadm --datapath says of the map."""

from __future__ import annotations

import pytest

from pylvs.cli import lvsd
from pylvs.cli.lvsadm import datapath_text
from pylvs.datapath.bpf import flowsize


def parse(*extra: str):
    return lvsd.parse_args(["-i", "eth0", *extra])


def test_default_is_65536_entries():
    assert parse().flow_entries == flowsize.DEFAULT_FLOW_ENTRIES == 65536


@pytest.mark.parametrize("text,entries", [("1024", 1024), ("1048576", 1 << 20), ("0x10000000", 1 << 28)])
def test_sizes_from_the_minimum_to_the_kernels_limit(text, entries):
    assert parse("--flow-entries", text).flow_entries == entries


@pytest.mark.parametrize("text,message", [
    ("1023", "--flow-entries: 1023 is out of range: from 1024 to 268435456 (the kernel's limit)"),
    ("268435457", "268435457 is out of range"),
    ("0", "0 is out of range"),
    ("-5", "-5 is out of range"),
    ("64k", "--flow-entries: invalid int value: '64k'"),
    ("", "invalid int value: ''"),
])
def test_a_bad_size_is_a_usage_error(text, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        lvsd.main(["-i", "eth0", "--flow-entries", text])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: lvsd") and message in err


def test_help_says_what_an_entry_costs(capsys):
    with pytest.raises(SystemExit):
        lvsd.main(["--help"])
    help_ = " ".join(capsys.readouterr().out.split())
    assert "--flow-entries N size of the fast path's flow map (default 65536, from 1024 to 268435456)" in help_
    assert "240 bytes an entry (65536: 15 MiB, 1048576: 240 MiB)" in help_


def test_the_map_takes_240_bytes_an_entry_with_buckets_in_powers_of_two():
    assert flowsize.flow_map_bytes(65536) == 65536 * 240
    assert flowsize.flow_map_bytes(1024) == 1024 * 240
    assert flowsize.flow_map_bytes(3_000_000) == 3_000_000 * 224 + (1 << 22) * 16


def test_a_map_larger_than_the_machine_is_refused_before_start():
    gib = 1 << 30
    assert lvsd.flow_map_fits(1 << 20, 4 * gib) is None
    assert lvsd.flow_map_fits(1 << 20, None) is None  # memory unknown: the kernel decides
    assert lvsd.flow_map_fits(1 << 28, 16 * gib) == ("--flow-entries 268435456 needs 60.0 GiB of kernel memory, "
                                                     "more than this machine's 16.0 GiB")


def test_too_big_for_this_machine_exits_2_unless_python_forwards(monkeypatch, capsys):
    monkeypatch.setattr(lvsd, "mem_total", lambda: 1 << 30)
    assert lvsd.main(["-i", "eth0", "--no-steering", "--flow-entries", str(1 << 23)]) == 2
    assert "--flow-entries 8388608 needs 1.9 GiB of kernel memory, more than this machine's 1.0 GiB" \
        in capsys.readouterr().err


def test_mem_total_reads_this_machine():
    total = lvsd.mem_total()
    assert total is not None and total > 1 << 26


def test_lvsadm_datapath_shows_the_maps_size_and_use():
    status = {"datapath": "bpf", "reason": "", "offloaded_conns": 700, "counters": {"hit": 5},
              "flow_entries": 1024, "flow_map_bytes": 1024 * 240, "flow_entries_used": 1019}
    lines = datapath_text(status).splitlines()
    assert lines[0] == "data path: bpf fast path for established flows, python for the rest; " \
                       "700 connections in the kernel"
    assert lines[1] == "flow map: 1024 entries (240 KiB of kernel memory), 1019 in use"
    assert lines[2] == "  hit                  5"
    status.update(retired_conns=650, tcp_state_mismatches=1)
    assert datapath_text(status).splitlines()[3] == \
        "connections ended in the kernel (entries retired there): 650; kernel and engine states disagreed " \
        "(withdrawn): 1"
    assert datapath_text({"datapath": "python", "reason": "--datapath python"}) == \
        "data path: python (--datapath python)\n"
