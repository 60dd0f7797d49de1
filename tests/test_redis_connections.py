"""Each kind of Redis connection, end to end through the command line.

Every test starts its own redis-server, except where the suite's plain one
will do, runs a master of two modules against it and checks where the run's
keys landed.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import psutil
import pytest

from conftest import RedisServer, free_port, run_cli

SECRET = "redis-connections-test-secret"
PASSWORD = "redis-test-pw"

TWO_MODULES = """
    from pipeline_actors import Module

    class Produce(Module):
        def execute(self, ctx):
            return 21

    class Consume(Module):
        depends_on = [Produce]

        def execute(self, ctx):
            print(f"consumed {ctx.result(Produce) * 2}")
"""

# The command writes its pid through a temporary file, so the file appears
# only once it contains the whole pid.
SLEEPER = """
    from pipeline_actors import Module

    class Sleeper(Module):
        def execute(self, ctx):
            ctx.run(
                "sh", "-c",
                "echo $$ > {pid_file}.tmp && mv {pid_file}.tmp {pid_file}; "
                "exec sleep 60",
            )
"""


def new_run_id() -> str:
    return f"conn-{uuid.uuid4().hex[:10]}"


def run_master(path: Path, url: str, run_id: str) -> subprocess.CompletedProcess[str]:
    """Run `path` as the master of `run_id` with one local worker."""
    return run_cli(
        path, "--redis", url, "--local-workers", "1", "--display", "lines",
        env={"PIPELINE_ACTORS_SECRET": SECRET, "PIPELINE_ACTORS_RUN_ID": run_id},
        timeout=45,
    )  # fmt: skip


def run_keys(server: RedisServer, run_id: str, *db: str) -> list[str]:
    """Return the keys of `run_id`; `db` is redis-cli's ``-n N`` for database N."""
    pattern = f"pipeline_actors:{{{run_id}}}:*"
    return sorted(server.cli(*db, "--scan", "--pattern", pattern).split())


def state_key(run_id: str) -> str:
    return f"pipeline_actors:{{{run_id}}}:state"


def workers_key(run_id: str) -> str:
    return f"pipeline_actors:{{{run_id}}}:workers"


@pytest.fixture
def unix_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server listening only on a Unix socket."""
    # A socket path fits in 108 bytes on Linux and 104 on macOS, which a deep
    # tmp_path can exceed, so the socket gets a short folder of its own.
    socket_folder = Path(tempfile.mkdtemp(prefix="pa-redis-", dir="/tmp"))
    socket_path = socket_folder / "redis.sock"
    server = RedisServer(
        tmp_path,
        port=0,
        server_args=["--unixsocket", str(socket_path), "--unixsocketperm", "700"],
        url=f"unix://{socket_path}",
        cli_args=["-s", str(socket_path)],
    )
    yield server
    server.stop()
    shutil.rmtree(socket_folder)


@pytest.fixture
def password_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server whose default user needs PASSWORD."""
    port = free_port()
    server = RedisServer(
        tmp_path,
        port=port,
        server_args=["--requirepass", PASSWORD],
        url=f"redis://:{PASSWORD}@127.0.0.1:{port}/0",
        cli_args=["-p", str(port), "-a", PASSWORD, "--no-auth-warning"],
    )
    yield server
    server.stop()


@pytest.fixture
def acl_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server with the ACL user alice and the default user disabled."""
    port = free_port()
    users = [
        "--user", "alice", "on", f">{PASSWORD}", "~*", "&*", "+@all",
        "--user", "default", "off",
    ]  # fmt: skip
    login = ["--user", "alice", "--pass", PASSWORD, "--no-auth-warning"]
    server = RedisServer(
        tmp_path,
        port=port,
        server_args=users,
        url=f"redis://alice:{PASSWORD}@127.0.0.1:{port}/0",
        cli_args=["-p", str(port), *login],
    )
    yield server
    server.stop()


def make_certificates(folder: Path) -> dict[str, Path]:
    """Write a throwaway CA and a server certificate for 127.0.0.1 into `folder`."""
    if shutil.which("openssl") is None:
        pytest.fail(
            "openssl is not installed; the TLS test needs it to make its "
            "certificates (Debian: apt-get install openssl)"
        )
    files = {
        name: folder / filename
        for name, filename in [
            ("ca", "ca.pem"), ("ca_key", "ca.key"), ("cert", "server.pem"),
            ("key", "server.key"), ("request", "server.csr"),
            ("extensions", "server.ext"),
        ]
    }  # fmt: skip
    # redis-py checks the host name by default, and Python matches an IP
    # address only against the certificate's subject alternative names.
    # Python 3.13 verifies strictly (VERIFY_X509_STRICT), which wants key
    # usages on both certificates and key identifiers linking them.
    files["extensions"].write_text(
        "subjectAltName = IP:127.0.0.1\n"
        "keyUsage = critical, digitalSignature, keyEncipherment\n"
        "extendedKeyUsage = serverAuth\n"
        "authorityKeyIdentifier = keyid\n"
        "subjectKeyIdentifier = hash\n"
    )
    commands = [
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
         "-keyout", files["ca_key"], "-out", files["ca"], "-days", "1",
         "-subj", "/CN=pipeline_actors test CA",
         "-addext", "basicConstraints = critical, CA:TRUE",
         "-addext", "keyUsage = critical, keyCertSign, cRLSign",
         "-addext", "subjectKeyIdentifier = hash"],
        ["openssl", "req", "-newkey", "rsa:2048", "-nodes",
         "-keyout", files["key"], "-out", files["request"],
         "-subj", "/CN=127.0.0.1"],
        ["openssl", "x509", "-req", "-in", files["request"], "-CA", files["ca"],
         "-CAkey", files["ca_key"], "-CAcreateserial", "-out", files["cert"],
         "-days", "1", "-extfile", files["extensions"]],
    ]  # fmt: skip
    for command in commands:
        result = subprocess.run(command, capture_output=True, text=True, timeout=30)
        if result.returncode != 0:
            pytest.fail(f"{' '.join(map(str, command))} failed:\n{result.stderr}")
    return files


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server that speaks only TLS, with a CA of the test's own."""
    files = make_certificates(tmp_path)
    tls_port = free_port()
    tls_args = [
        "--tls-port", str(tls_port),
        "--tls-cert-file", str(files["cert"]),
        "--tls-key-file", str(files["key"]),
        "--tls-ca-cert-file", str(files["ca"]),
        "--tls-auth-clients", "no",
    ]  # fmt: skip
    # redis-py (8.2 here) passes a query parameter that it does not parse
    # itself to the connection as a string, and ssl_ca_certs is the
    # SSLConnection's file of CA certificates to trust.
    query = urlencode({"ssl_ca_certs": files["ca"]})
    server = RedisServer(
        tmp_path,
        port=0,
        server_args=tls_args,
        url=f"rediss://127.0.0.1:{tls_port}/0?{query}",
        cli_args=["-p", str(tls_port), "--tls", "--cacert", str(files["ca"])],
        requirement="a redis-server and redis-cli built with TLS support",
    )
    yield server
    server.stop()


def test_unix_socket_run(unix_server, pipeline_file):
    run_id = new_run_id()

    result = run_master(pipeline_file(TWO_MODULES), unix_server.url, run_id)

    assert result.returncode == 0, result.stderr
    assert "consumed 42" in result.stdout
    assert unix_server.cli("get", state_key(run_id)).strip() == "finished"
    assert unix_server.cli("hkeys", workers_key(run_id)).split() == ["0.1"]


def test_password_in_url_run(password_server, pipeline_file):
    run_id = new_run_id()

    result = run_master(pipeline_file(TWO_MODULES), password_server.url, run_id)

    assert result.returncode == 0, result.stderr
    assert "consumed 42" in result.stdout
    assert PASSWORD not in result.stdout + result.stderr
    assert password_server.cli("get", state_key(run_id)).strip() == "finished"
    assert password_server.cli("hkeys", workers_key(run_id)).split() == ["0.1"]


def test_wrong_password_exits_three(password_server, pipeline_file):
    wrong = "not-the-password-7f3a"
    url = f"redis://:{wrong}@127.0.0.1:{password_server.port}/0"

    result = run_master(pipeline_file(TWO_MODULES), url, new_run_id())

    assert result.returncode == 3, result.stderr
    assert "rejected the credentials" in result.stderr
    assert f"redis://127.0.0.1:{password_server.port}/0" in result.stderr
    assert wrong not in result.stdout + result.stderr


def test_acl_user_run(acl_server, pipeline_file):
    run_id = new_run_id()

    result = run_master(pipeline_file(TWO_MODULES), acl_server.url, run_id)

    assert result.returncode == 0, result.stderr
    assert "consumed 42" in result.stdout
    assert PASSWORD not in result.stdout + result.stderr
    assert acl_server.cli("get", state_key(run_id)).strip() == "finished"
    assert acl_server.cli("hkeys", workers_key(run_id)).split() == ["0.1"]


def test_database_number_run(redis_server, pipeline_file):
    run_id = new_run_id()
    url = f"redis://127.0.0.1:{redis_server.port}/5"

    result = run_master(pipeline_file(TWO_MODULES), url, run_id)

    assert result.returncode == 0, result.stderr
    assert "consumed 42" in result.stdout
    assert state_key(run_id) in run_keys(redis_server, run_id, "-n", "5")
    assert run_keys(redis_server, run_id, "-n", "0") == []


def test_tls_run(tls_server, pipeline_file):
    run_id = new_run_id()

    result = run_master(pipeline_file(TWO_MODULES), tls_server.url, run_id)

    assert result.returncode == 0, result.stderr
    assert "consumed 42" in result.stdout
    assert tls_server.cli("get", state_key(run_id)).strip() == "finished"
    assert tls_server.cli("hkeys", workers_key(run_id)).split() == ["0.1"]


def test_unreachable_host_exits_three(pipeline_file):
    path = pipeline_file(TWO_MODULES)
    closed_port = free_port()

    started = time.monotonic()
    result = run_master(path, f"redis://127.0.0.1:{closed_port}/0", new_run_id())
    elapsed = time.monotonic() - started

    assert result.returncode == 3, result.stderr
    # The README promises that an unreachable Redis stops the command within
    # 10 seconds, so the bound counts from the command's start.
    assert elapsed <= 10.0, f"took {elapsed:.1f} s"
    expected = f"cannot reach Redis at redis://127.0.0.1:{closed_port}/0"
    assert expected in result.stderr


def end_process_group(process: subprocess.Popen[str]) -> None:
    """Kill the process group that `process` leads, if it is still running."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def end_sleep(pid_file: Path) -> None:
    """Kill the test's ``sleep 60``, which runs in a process group of its own."""
    if not pid_file.exists():
        return
    try:
        process = psutil.Process(int(pid_file.read_text()))
        if process.cmdline() == ["sleep", "60"]:
            process.kill()
    except psutil.NoSuchProcess:
        pass


def wait_for_file(path: Path, processes: list[subprocess.Popen[str]]) -> None:
    deadline = time.monotonic() + 30
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear in 30 s"
        for process in processes:
            assert process.poll() is None, f"{process.args} exited early"
        time.sleep(0.05)


def test_ctrl_c_on_worker_cancels_run(redis_server, pipeline_file, tmp_path):
    pid_file = tmp_path / "sleep.pid"
    path = pipeline_file(textwrap.dedent(SLEEPER).format(pid_file=pid_file))
    env = {
        **os.environ,
        "REDIS_URL": redis_server.url,
        "PIPELINE_ACTORS_RUN_ID": new_run_id(),
        "PIPELINE_ACTORS_SECRET": SECRET,
    }
    # A terminal sends Ctrl-C to its foreground process group, so each
    # instance gets a group of its own.
    master = subprocess.Popen(
        [sys.executable, "-m", "pipeline_actors", str(path), "--local-workers", "0",
         "--min-workers", "1", "--display", "lines"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    worker = subprocess.Popen(
        [sys.executable, "-m", "pipeline_actors", "worker", "--instance-index", "1",
         "--local-workers", "1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        wait_for_file(pid_file, [master, worker])
        sleep_pid = int(pid_file.read_text())

        os.killpg(worker.pid, signal.SIGINT)
        master_out, master_err = master.communicate(timeout=30)
        _, worker_err = worker.communicate(timeout=30)
    finally:
        end_process_group(master)
        end_process_group(worker)
        end_sleep(pid_file)

    assert master.returncode == 130, master_err
    assert re.search(r"Sleeper +cancelled", master_out)
    # run_worker_instance returns OK once its workers stop cleanly, which they
    # do when the master shuts them down after the cancel.
    assert worker.returncode == 0, worker_err
    assert not psutil.pid_exists(sleep_pid)


def test_pyproject_settings_run(redis_server, pipeline_file, tmp_path):
    run_id = new_run_id()
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        "[tool.pipeline_actors]\n"
        f'redis-url = "{redis_server.url}"\n'
        f'run-id = "{run_id}"\n'
    )
    path = pipeline_file(TWO_MODULES)
    source = f"(pyproject.toml {pyproject.resolve()})"
    # Empty variables count as unset, so none from this machine can override
    # the file.
    env = {
        "PIPELINE_ACTORS_SECRET": SECRET,
        "REDIS_URL": "",
        "PIPELINE_ACTORS_RUN_ID": "",
        "MODULARPIPELINES_RUN_ID": "",
    }

    printed_config = run_cli(path, "--print-config", env=env)
    result = run_cli(
        path, "--local-workers", "1", "--display", "lines", env=env, timeout=45
    )

    assert printed_config.returncode == 0, printed_config.stderr
    url_line = rf"^redis_url += {re.escape(redis_server.url)}  {re.escape(source)}$"
    assert re.search(url_line, printed_config.stdout, re.M), printed_config.stdout
    run_id_line = rf"^run_id += {re.escape(run_id)}  {re.escape(source)}$"
    assert re.search(run_id_line, printed_config.stdout, re.M), printed_config.stdout
    assert result.returncode == 0, result.stderr
    assert "consumed 42" in result.stdout
    assert redis_server.cli("get", state_key(run_id)).strip() == "finished"
