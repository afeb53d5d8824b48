"""A daemon that cannot start where it is (a port in use, a state directory it cannot write)
says what in one line and exits with status 2, which the systemd units do not retry (there,
as for a config error, retrying unchanged cannot help); never a traceback."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.integration]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "courierwatch", *args], capture_output=True,
                          text=True, timeout=60, env=env)  # fmt: skip


def said(done: subprocess.CompletedProcess[str]) -> str:
    """The one line courierwatch itself wrote on stderr (log lines and, for a port gRPC
    could not bind, gRPC's own line may come before it)."""
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("courierwatch:")]
    return line


@pytest.fixture
def taken():
    """A loopback port some other program listens on."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield f"127.0.0.1:{server.getsockname()[1]}"


def free() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def collector_config(tmp_path: Path, *, grpc: str, http: str) -> str:
    path = tmp_path / "collector.yaml"
    path.write_text(yaml.safe_dump({
        "listen": {"grpc": grpc, "http": http}, "transport": {"insecure": True},
        "state_dir": str(tmp_path / "state"),
    }))  # fmt: skip
    return str(path)


def test_a_grpc_port_in_use_is_one_line(tmp_path, taken):
    done = run("collector", "--config", collector_config(tmp_path, grpc=taken, http=free()))
    assert said(done) == (
        f"courierwatch: cannot start: gRPC cannot listen on {taken}: Address already in use"
    )


def test_an_http_port_in_use_is_one_line(tmp_path, taken):
    done = run("collector", "--config", collector_config(tmp_path, grpc=free(), http=taken))
    line = said(done)
    assert line.startswith("courierwatch: cannot start: ") and "address already in use" in line
    assert f"{taken.split(':')[1]})" in line  # it names the port


def test_up_with_its_port_in_use_is_one_line(taken):
    line = said(run("up", "--http", taken, "--grpc", "127.0.0.1:0"))
    assert "address already in use" in line and taken.split(":")[1] in line


def probe_config(tmp_path: Path, **extra: object) -> str:
    path = tmp_path / "probe.yaml"
    path.write_text(yaml.safe_dump({
        "site": "ams-office", "probe_id": "pi-ams-1", "collectors": ["127.0.0.1:1"],
        "transport": {"insecure": True}, "catalog": {"groups": []}, "families": ["ipv4"],
        "targets": [{"host": "127.0.0.1", "port": 1, "check": "tcp"}], **extra,
    }))  # fmt: skip
    return str(path)


def test_a_state_directory_the_probe_cannot_write_is_one_line(tmp_path):
    # /proc takes no new files, whoever asks (these tests may run as root).
    done = run("probe", "--config", probe_config(tmp_path),
               env={**os.environ, "STATE_DIRECTORY": "/proc"})  # fmt: skip
    line = said(done)
    assert line.startswith("courierwatch: cannot start: spool /proc/")
    assert line.endswith(": cannot open it: unable to open database file")


def test_a_spool_path_under_a_file_is_one_line(tmp_path):
    (tmp_path / "not-a-dir").write_text("")
    spool = tmp_path / "not-a-dir" / "spool.sqlite"
    line = said(run("probe", "--config", probe_config(tmp_path, spool={"path": str(spool)})))
    assert line.startswith(f"courierwatch: cannot start: spool {spool}: cannot open it: ")
    assert str(tmp_path / "not-a-dir") in line.rpartition("cannot open it: ")[2]
