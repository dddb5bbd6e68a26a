"""The fast path's counter indices in C and their names in Python agree (no root needed)."""

from __future__ import annotations

import pathlib
import re

from pylvs.datapath.bpf import maps

SOURCE = pathlib.Path(maps.__file__).parent / "pylvs_fastpath.bpf.c"


def test_counter_enum_matches_python_names():
    body = re.search(r"enum pylvs_counter \{(.*?)\};", SOURCE.read_text(), re.S).group(1)
    names = re.findall(r"^\s*CNT_(\w+)(?: = 0)?,", body, re.M)
    assert names[-1] == "MAX"
    assert [n.lower() for n in names[:-1]] == list(maps.COUNTERS)
