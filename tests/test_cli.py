"""The courierwatch command as a user runs it: help, one-shot checks, errors, `up`."""

import asyncio
import json
import subprocess
import sys

import pytest
import yaml

from courierwatch.probe.config import default_probe_id
from fakeapple import COURIER_ALPN, COURIER_SNI
from processes import courierwatch, key, line_starting, wait_for_metrics


def run(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "courierwatch", *args],
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("role", ["probe", "collector", "up", "check"])
def test_every_role_explains_itself(role):
    done = run(role, "--help")
    assert done.returncode == 0
    assert "--config" in done.stdout


def test_a_bad_config_is_one_line_naming_file_line_and_field(tmp_path):
    bad = tmp_path / "probe.yaml"
    bad.write_text("site: ams\ntargets:\n  - host: a.apple.com\n    port: 99999\n    check: tcp\n")
    done = run("check", "--config", str(bad))
    assert done.returncode == 2
    assert done.stderr == (
        f"courierwatch: {bad}:4: targets[0].port: must be an integer from 1 to 65535, "
        "got 99999\n"
    )


def test_the_daemons_refuse_to_start_without_their_identity(tmp_path):
    empty = tmp_path / "probe.yaml"
    empty.write_text("{}\n")
    done = run("probe", "--config", str(empty))
    assert done.returncode == 2
    assert done.stderr.startswith(f"courierwatch: {empty}") and "site" in done.stderr
    assert len(done.stderr.splitlines()) == 1



def config(tmp_path, apple, targets) -> str:
    path = tmp_path / "probe.yaml"
    path.write_text(yaml.safe_dump({
        "resolver": {"nameservers": [apple.host], "port": apple.dns_port},
        "trust": {"anchors": [str(apple.ca_pem_path)]},
        "catalog": {"groups": []},
        "families": ["ipv4"],
        "targets": targets,
    }))
    return str(path)


def courier(apple):
    return {"host": "3-courier.push.apple.com", "port": apple.courier_port, "check": "tls",
            "group": "push", "sni": COURIER_SNI, "alpn": [COURIER_ALPN],
            "interval": "2s", "timeout": "1s"}


async def check_cli(*args):
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "courierwatch", "check", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode, out.decode()


async def test_check_json_reports_each_result_and_exits_0_when_all_work(tmp_path, apple):
    path = config(tmp_path, apple, [courier(apple)])
    code, out = await check_cli("--config", path, "--json")
    (row,) = json.loads(out)["results"]
    assert code == 0
    assert row["outcome"] == "ok"
    assert row["cname_chain"][-1] == "eu-central-courier-4.push-apple.com.akadns.net"
    assert row["tls"]["alpn"] == COURIER_ALPN


async def test_check_table_shows_failures_and_exits_1(tmp_path, apple):
    path = config(tmp_path, apple, [
        courier(apple),
        {"host": "nxdomain.apple.com", "port": 443, "check": "tcp"},
    ])
    code, out = await check_cli("--config", path)
    assert code == 1
    assert "dns_nxdomain" in out
    assert out.rstrip().endswith("2 checks, 1 ok, 1 failed")
    assert max(len(line) for line in out.splitlines()) <= 80


@pytest.mark.integration
async def test_up_prints_the_metrics_url_and_serves_results(tmp_path, apple):
    path = config(tmp_path, apple, [courier(apple)])
    async with courierwatch("up", "--config", path, "--http", "127.0.0.1:0",
                            "--grpc", "127.0.0.1:0") as up:
        line = await line_starting(up, "Metrics: ", 15)
        url = line.removeprefix("Metrics: ")
        wanted = key("courierwatch_check_success", site="local", probe=default_probe_id(),
                     target="3-courier.push.apple.com", port=str(apple.courier_port),
                     check="tls", group="push", family="ipv4", via="direct", pop="eu-central")
        samples = await wait_for_metrics(url, [wanted], 30)
        assert samples[wanted] == 1



def role_config(tmp_path, role: str) -> dict:
    """A valid config for `role`, whose state and spool would go in tmp_path."""
    if role == "collector":
        return {"listen": {"grpc": "127.0.0.1:0", "http": "127.0.0.1:0"},
                "transport": {"insecure": True}, "state_dir": str(tmp_path / "state")}
    config = {"catalog": {"groups": []}, "families": ["ipv4"],
              "spool": {"path": str(tmp_path / "state" / "spool.sqlite")},
              "targets": [{"host": "127.0.0.1", "port": 443, "check": "tcp"}]}
    if role == "probe":
        config.update(site="ams-office", collectors=["127.0.0.1:9475"],
                      transport={"insecure": True})
    return config


@pytest.mark.parametrize("role", ["probe", "collector", "up", "check"])
def test_check_config_validates_and_starts_nothing(tmp_path, role):
    path = tmp_path / f"{role}.yaml"
    path.write_text(yaml.safe_dump(role_config(tmp_path, role)))
    done = run(role, "--config", str(path), "--check-config")
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == (f"{path}: ok\n" if role == "collector" else f"{path}: ok, 1 checks\n")
    assert not (tmp_path / "state").exists()  # no spool, no store: nothing started


@pytest.mark.parametrize("role", ["probe", "collector", "up", "check"])
def test_check_config_of_a_bad_file_is_its_one_line_error(tmp_path, role):
    config = role_config(tmp_path, role)
    if role == "collector":
        config["listen"]["http"] = "127.0.0.1:99999"
    else:
        config["targets"][0]["port"] = 99999
    path = tmp_path / f"{role}.yaml"
    path.write_text(yaml.safe_dump(config))
    done = run(role, "--config", str(path), "--check-config")
    assert (done.returncode, done.stdout) == (2, "")
    (line,) = done.stderr.splitlines()
    field = "listen.http" if role == "collector" else "targets[0].port"
    assert line.startswith(f"courierwatch: {path}:") and f": {field}: " in line


def test_check_config_without_a_file_checks_the_built_in_defaults():
    done = run("up", "--check-config")
    assert done.returncode == 0
    assert done.stdout.startswith("<built-in defaults>: ok, ") and " checks" in done.stdout
