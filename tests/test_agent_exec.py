"""Commands through firec-agent, run as a host process on a Unix socket: exec and spawn."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from firec.agent import AsyncClient, Client
from firec.errors import CommandError, CommandTimeoutError
from tests.agent_support import RunningAgent


def _running(marker: str) -> bool:
    """Some live process has ``marker`` in its command line."""
    wanted = marker.replace(" ", "\0").encode()
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and wanted in (entry / "cmdline").read_bytes():
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    return True
        except OSError:
            continue  # gone meanwhile
    return False


def _gone(marker: str, timeout: float = 5.0) -> bool:
    """No process with ``marker`` in its command line is left (waiting up to ``timeout``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _running(marker):
            return True
        time.sleep(0.02)
    return False


def test_stdout_and_stderr_come_apart_with_the_exit_code(client: Client) -> None:
    result = client.exec(["sh", "-c", "echo out; echo err >&2; echo more; exit 3"])
    assert result.stdout == b"out\nmore\n"
    assert result.stderr == b"err\n"
    assert result.exit_code == 3
    assert result.signal is None and not result.timed_out and not result.ok


def test_a_command_ended_by_a_signal_says_which(client: Client) -> None:
    result = client.exec(["sh", "-c", "kill -TERM $$"])
    assert (result.exit_code, result.signal) == (-signal.SIGTERM, signal.SIGTERM)


def test_stdin_reaches_the_process_small_and_large(client: Client) -> None:
    assert client.exec(["cat"], stdin=b"hello\n").stdout == b"hello\n"
    big = os.urandom(3 * 1024 * 1024 + 17)  # more than fits in pipes and frames
    result = client.exec(["sh", "-c", "cat; echo done >&2"], stdin=big)
    assert result.stdout == big and result.stderr == b"done\n"
    assert client.exec(["wc", "-c"], stdin=iter([b"ab", b"cd"])).stdout.strip() == b"4"


def test_no_stdin_reads_as_empty(client: Client) -> None:
    assert client.exec(["cat"]).stdout == b""


def test_env_cwd_and_a_shell_when_asked(client: Client, tmp_path: Path) -> None:
    script = 'echo "$FOO|${HOME-unset}"; pwd'
    result = client.exec(["sh", "-c", script], env={"FOO": "bar", "HOME": None}, cwd=tmp_path)
    assert result.stdout == f"bar|unset\n{tmp_path}\n".encode()
    cleared = client.exec(["/usr/bin/env"], env={"ONLY": "1"}, env_clear=True)
    assert sorted(cleared.stdout.decode().split()) == ["ONLY=1", f"PATH={_DEFAULT_PATH}"]
    assert client.exec("echo $((6 * 7)) | tr 4 X", shell=True).stdout == b"X2\n"
    with pytest.raises(ValueError, match="shell=True"):
        client.exec("echo hi")


_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_uid_and_gid(client: Client) -> None:
    assert client.exec(["id", "-u"], user="nobody").stdout == b"65534\n"
    ids = client.exec(["sh", "-c", "id -u; id -g; id -G"], user="1234:4321").stdout.split()
    assert ids == [b"1234", b"4321", b"4321"]
    assert client.exec(["id", "-u"], user=4242).stdout == b"4242\n"
    with pytest.raises(CommandError, match="no user 'no-such-user'"):
        client.exec(["true"], user="no-such-user")


def test_a_missing_program_or_directory_is_a_clear_error(client: Client) -> None:
    with pytest.raises(CommandError) as caught:
        client.exec(["no-such-program", "x"], stdin=b"some stdin it promised")
    assert caught.value.code == "not_found"
    assert "cannot execute 'no-such-program': No such file or directory" in str(caught.value)
    assert "no-such-program x" in str(caught.value)
    with pytest.raises(CommandError, match="cannot change to directory '/no/such/dir'"):
        client.exec(["true"], cwd="/no/such/dir")
    assert client.exec(["echo", "still serving"]).stdout == b"still serving\n"


def test_check_raises_naming_the_command_with_its_result(client: Client) -> None:
    with pytest.raises(CommandError) as caught:
        client.exec(["sh", "-c", "echo oops >&2; exit 4"], check=True)
    assert "exec sh -c 'echo oops >&2; exit 4': exited with status 4: oops" in str(caught.value)
    assert caught.value.result.exit_code == 4
    assert client.exec(["true"], check=True).ok


def test_timeout_kills_the_process_group_and_raises(client: Client) -> None:
    marker = "sleep 30.4242"
    started = time.monotonic()
    with pytest.raises(CommandTimeoutError) as caught:
        client.exec(["sh", "-c", f"{marker} & {marker}; echo never"], timeout=0.3)
    assert time.monotonic() - started < 5
    assert caught.value.killed and caught.value.timeout == 0.3
    assert "timed out after 0.3s and was killed" in str(caught.value)
    assert caught.value.result.signal == signal.SIGKILL
    assert _gone(marker), "the timed-out command's process group outlived it"


def test_spawn_streams_output_before_the_process_ends(client: Client) -> None:
    with client.spawn(["sh", "-c", "echo one; read x; echo got $x; echo err >&2"]) as proc:
        assert next(iter(proc.stdout)) == b"one\n"  # it still waits for its stdin here
        assert proc.returncode is None
        proc.write_stdin("two\n")
        proc.close_stdin()
        assert b"".join(proc.stdout) == b"got two\n"
        assert b"".join(proc.stderr) == b"err\n"
        result = proc.wait()
    assert result.exit_code == 0 and proc.returncode == 0


def test_signals_and_kill(client: Client) -> None:
    script = 'trap "echo usr1; exit 7" USR1; echo ready; while :; do sleep 0.01; done'
    with client.spawn(["sh", "-c", script]) as proc:
        assert next(iter(proc.stdout)) == b"ready\n"
        proc.signal(signal.SIGUSR1)
        result = proc.wait()
    assert (result.exit_code, result.stdout) == (7, b"usr1\n")
    with client.spawn(["sleep", "30"]) as proc:
        proc.kill()
        assert proc.wait().signal == signal.SIGKILL
    with pytest.raises(ValueError, match="signals are 1 to 64"):
        proc.signal(99)


def test_wait_with_a_timeout_leaves_it_running(client: Client) -> None:
    with client.spawn(["sh", "-c", "read x; echo $x"]) as proc:
        with pytest.raises(CommandTimeoutError, match=r"still running after 0\.1s") as caught:
            proc.wait(timeout=0.1)
        assert not caught.value.killed
        proc.write_stdin("late\n")
        assert proc.wait(timeout=5).stdout == b"late\n"


def test_closing_a_running_process_kills_it(client: Client) -> None:
    marker = "sleep 30.5151"
    with client.spawn(["sh", "-c", marker]) as proc:
        assert proc.pid > 0
    assert _gone(marker), "a process whose connection closed outlived it"
    assert client.exec(["echo", "ok"]).stdout == b"ok\n"


def test_pty_with_resize(client: Client) -> None:
    script = "test -t 0 && echo tty; stty size; read x; stty size"
    with client.spawn(["sh", "-c", script], pty=(24, 80)) as proc:
        seen = b""
        chunks = iter(proc.stdout)
        while b"24 80" not in seen:
            seen += next(chunks)
        proc.resize(40, 100)
        proc.write_stdin("go\n")
        rest = b"".join(chunks)
        result = proc.wait()
    assert b"tty" in seen
    assert b"40 100" in rest, rest
    assert result.exit_code == 0 and result.stderr == b""


def test_100_concurrent_execs_async(agent: RunningAgent) -> None:
    async def main() -> list[bytes]:
        async with AsyncClient.unix(agent.socket) as client:
            results = await asyncio.gather(
                *(client.exec(["sh", "-c", f"echo {i}; echo e{i} >&2"]) for i in range(100))
            )
            return [r.stdout + r.stderr for r in results]

    outputs = asyncio.run(main())
    assert outputs == [f"{i}\ne{i}\n".encode() for i in range(100)]


def test_100_concurrent_execs_sync_from_threads(client: Client) -> None:
    with ThreadPoolExecutor(max_workers=25) as pool:
        results = list(pool.map(lambda i: client.exec(["echo", str(i)]), range(100)))
    assert [r.stdout for r in results] == [f"{i}\n".encode() for i in range(100)]


def test_async_spawn_iterates_output(agent: RunningAgent) -> None:
    async def main() -> tuple[bytes, bytes, int]:
        async with AsyncClient.unix(agent.socket) as client:
            proc = await client.spawn(["sh", "-c", "echo a; echo b >&2; read x; echo $x"])
            out = b""
            async for chunk in proc.stdout:
                out += chunk
                if out == b"a\n":
                    await proc.write_stdin(b"c\n")
            err = b"".join([chunk async for chunk in proc.stderr])
            return out, err, (await proc.wait()).exit_code

    assert asyncio.run(main()) == (b"a\nc\n", b"b\n", 0)


def test_connections_are_reused(client: Client) -> None:
    for _ in range(5):
        client.exec(["true"])
    assert len(client._idle) == 1
