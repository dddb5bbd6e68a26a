"""The FlowEntry layout in Python and its C mirror agree field by field (compiled with the C compiler)."""

from __future__ import annotations

import pathlib
import re
import shutil
import subprocess

import pytest

from pylvs.engine import flow

HEADER = pathlib.Path(flow.__file__).parents[1] / "datapath" / "bpf" / "pylvs_flow.h"


def python_layout(fields: tuple[tuple[str, str, str], ...]) -> list[tuple[str, int, int]]:
    out, offset = [], 0
    for name, code, _ in fields:
        size = flow.struct.calcsize("=" + code)
        out.append((name, offset, size))
        offset += size
    return out


def c_layout(tmp_path: pathlib.Path, struct_name: str, names: list[str]) -> tuple[list[tuple[str, int, int]], int]:
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.fail("no C compiler: install gcc (apt-get install gcc) to check the FlowEntry C header")
    lines = [f'printf("%s %zu %zu\\n", "{n}", offsetof(struct {struct_name}, {n}), '
             f"sizeof(((struct {struct_name} *)0)->{n}));" for n in names]
    src = tmp_path / "layout.c"
    src.write_text(f'#include <stddef.h>\n#include <stdio.h>\n#include "{HEADER}"\nint main(void) {{\n'
                   + "\n".join(lines) + f'\nprintf("sizeof %zu\\n", sizeof(struct {struct_name}));\nreturn 0;\n}}\n')
    exe = tmp_path / "layout"
    subprocess.run([cc, "-o", str(exe), str(src)], check=True)
    rows = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.split("\n")
    parsed = [r.split() for r in rows if r]
    return [(n, int(o), int(s)) for n, o, s in parsed[:-1]], int(parsed[-1][1])


@pytest.mark.parametrize(("struct_name", "fields", "packer"), [
    ("pylvs_flow_key", flow.KEY_FIELDS, flow.KEY),
    ("pylvs_flow_value", flow.VALUE_FIELDS, flow.VALUE),
    ("pylvs_flow_event", flow.EVENT_FIELDS, flow.EVENT),
    ("pylvs_flow_retired", flow.RETIRED_FIELDS, flow.RETIRED),
])
def test_c_header_matches_python(tmp_path, struct_name, fields, packer):
    expected = python_layout(fields)
    got, size = c_layout(tmp_path, struct_name, [n for n, _, _ in fields])
    assert got == expected
    assert size == packer.size


def test_header_declares_every_field_in_order():
    text = HEADER.read_text()
    for struct_name, fields in (("pylvs_flow_key", flow.KEY_FIELDS), ("pylvs_flow_value", flow.VALUE_FIELDS),
                                ("pylvs_flow_event", flow.EVENT_FIELDS),
                                ("pylvs_flow_retired", flow.RETIRED_FIELDS)):
        body = re.search(r"struct " + struct_name + r" \{(.*?)\};", text, re.S).group(1)
        declared = re.findall(r"^\s*(__\w+|struct \w+)\s+(\w+)(\[\d+\])?;", body, re.M)
        assert [(t + (a or ""), n) for t, n, a in declared] == [(c, n) for n, _, c in fields]


def test_flag_and_encap_values_match():
    text = HEADER.read_text()
    defines = dict(re.findall(r"#define (FLOW_\w+) (0x[0-9a-f]+|\d+)", text))
    assert int(defines["FLOW_F_ENGINE_ONLY"], 0) == flow.F_ENGINE_ONLY
    assert int(defines["FLOW_F_ENCAP_CSUM"], 0) == flow.F_ENCAP_CSUM
    assert int(defines["FLOW_F_TOA"], 0) == flow.F_TOA
    assert int(defines["FLOW_DIR_OUT"], 0) == flow.DIR_OUT
    for name, value in (("IPIP", flow.ENCAP_IPIP), ("GUE", flow.ENCAP_GUE), ("GRE", flow.ENCAP_GRE)):
        assert int(defines[f"FLOW_ENCAP_{name}"]) == value
    for method in ("MASQ", "TUNNEL", "ROUTE", "FULLNAT"):
        assert int(defines[f"FLOW_METHOD_{method}"]) == flow.Method[method]


def test_tcp_state_table_dimensions_match_the_engine():
    from pylvs.engine import tcpstate

    text = HEADER.read_text()
    defined = dict(re.findall(r"#define PYLVS_TCP_(\w+) (\d+)", text))
    assert int(defined["STATES"]) == len(tcpstate.NAMES) == len(tcpstate.TRANSITIONS[0])
    assert int(defined["ROWS"]) == len(tcpstate.TRANSITIONS)
    assert (int(defined["INPUT"]), int(defined["OUTPUT"]), int(defined["INPUT_ONLY"])) == (
        tcpstate.INPUT, tcpstate.OUTPUT, tcpstate.INPUT_ONLY)
    named = ("ESTABLISHED", "SYN_RECV", "FIN_WAIT", "TIME_WAIT", "CLOSE")
    assert [int(defined[f"S_{name}"]) for name in named] == [getattr(tcpstate, name) for name in named]
