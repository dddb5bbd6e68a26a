"""lvsd without an external command it needs says what is missing and what to do (issue 10)."""

from __future__ import annotations

import pytest

from pylvs.cli import lvsd
from pylvs.io import steering


@pytest.fixture
def no_nft(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty PATH: no nft anywhere


def test_lvsd_without_nft_names_the_package_and_the_option(no_nft, capsys):
    assert lvsd.main(["-i", "eth0"]) == 1
    assert capsys.readouterr().err == (
        "lvsd: nft (nftables) is not installed: install it (apt-get install nftables), "
        "or start lvsd with --no-steering and keep the kernel off the VIPs yourself\n")


def test_steering_calls_without_nft_raise_the_same_sentence(no_nft):
    with pytest.raises(steering.SteeringError, match=r"apt-get install nftables"):
        steering.install()
    with pytest.raises(steering.SteeringError, match=r"--no-steering"):
        steering.present()
    steering.remove()  # nothing to remove, nothing to complain about
