"""The add-on's side of a remote engine without Blender (issue 18): the server address checked before any start, the
relay's launch (address and token in its environment, never on its command line), and what Check Engine says of a
remote engine. The relay and the server themselves are tested end to end in tests/engine/test_remote.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from addon.core import remote, text
from addon.core.errors import EngineError
from addon.core.worker_client import REMOTE_RELAY_MODULE

HELLO = {"type": "hello", "protocol": 2, "engine": "0.1.0", "python": "3.11.9", "numpy": "1.26.4",
         "torch": "2.13.0+cu128", "cuda": "NVIDIA H200"}  # fmt: skip


@pytest.mark.parametrize("url", ["ws://127.0.0.1:8765", " wss://gpu-box.example:443/ ", "ws://[::1]:9000", "ws://box"])
def test_usable_addresses_pass(url):
    assert remote.checked_url(url) == url.strip()


@pytest.mark.parametrize(
    "url, words",
    [
        ("", "must start with ws:// or wss://"),
        ("http://gpu-box:8765", "must start with ws:// or wss://"),
        ("gpu-box:8765", "must start with ws:// or wss://"),
        ("ws://:8765", "name a host"),
        ("ws://gpu-box:99999", "not a valid URL"),
        ("ws://gpu-box:0", "port 0"),
    ],
)
def test_unusable_addresses_say_what_to_type(url, words):
    with pytest.raises(EngineError, match=words) as raised:
        remote.checked_url(url)
    assert "Engine: Remote" in str(raised.value)


def test_the_relay_gets_the_address_and_token_in_its_environment_only():
    launch = remote.remote_launch("/usr/bin/python3", Path("/engine"), " ws://gpu-box:8765 ", " s3cret\n")
    assert launch.module == REMOTE_RELAY_MODULE
    assert launch.command() == ["/usr/bin/python3", "-m", REMOTE_RELAY_MODULE]
    assert launch.extra_env == {remote.URL_VARIABLE: "ws://gpu-box:8765", remote.TOKEN_VARIABLE: "s3cret"}
    assert not any("s3cret" in part for part in launch.command())
    environment = launch.environment()
    assert environment[remote.TOKEN_VARIABLE] == "s3cret" and "/engine" in environment["PYTHONPATH"]


def test_launches_differ_by_server_and_token():
    """A warm relay is reused only for the same server and token (`WarmWorker` compares launches)."""
    first = remote.remote_launch("python3", Path("/engine"), "ws://a:1", "t")
    assert first == remote.remote_launch("python3", Path("/engine"), "ws://a:1", "t")
    assert first != remote.remote_launch("python3", Path("/engine"), "ws://a:1", "u")
    assert first != remote.remote_launch("python3", Path("/engine"), "ws://b:1", "t")


def test_check_engine_names_the_remote_server_and_its_gpu():
    shown = text.describe_engine({**HELLO, "remote": "ws://gpu-box:8765"})
    assert shown.startswith("Remote engine at ws://gpu-box:8765: Engine 0.1.0")
    assert "torch 2.13.0+cu128" in shown and "CUDA GPU: NVIDIA H200" in shown
    assert not text.describe_engine(HELLO).startswith("Remote")


def test_the_relays_variables_are_the_engines():
    from engine import protocol

    assert (remote.URL_VARIABLE, remote.TOKEN_VARIABLE) == (protocol.REMOTE_URL_VARIABLE, protocol.REMOTE_TOKEN_VARIABLE)
