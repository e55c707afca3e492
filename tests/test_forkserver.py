"""A zygote and its children: real processes, a real Unix socket, no mocks."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from procs import alive

from bot import forkserver

ROOT = Path(__file__).resolve().parent.parent

ZYGOTE = """
import os, sys
from bot import forkserver

BIG = bytes(range(256)) * (40 * 4096)  # 40 MB loaded before any child is forked

def echo(conn):  # an own child: answers each line with its process id, its parent and the line
    with conn.makefile("rb") as lines, conn.makefile("wb") as out:
        for line in lines:
            if line == b"crash\\n":
                raise RuntimeError("asked to")
            out.write(b"%d %d %s" % (os.getpid(), os.getppid(), line))
            out.flush()

def upper(request):  # a shared child
    return b"%d %s\\n" % (len(BIG), request.upper())

def broken():  # a shared kind whose loading fails (matplotlib missing, say)
    raise ImportError("no such library")

control_in, control_out = forkserver.take_stdio()
forkserver.serve(
    sys.argv[1], {"echo": echo}, {"upper": lambda: upper, "broken": broken}, control_in, control_out
)
"""


class Zygote:
    """The zygote process of a test, and the exits it reported."""

    def __init__(self, proc: asyncio.subprocess.Process, path: str):
        self.proc = proc
        self.path = path
        self.exits: dict[int, int] = {}
        self.exited = asyncio.Event()
        self.reading = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            _, pid, code = line.split()
            self.exits[int(pid)] = int(code)
            self.exited.set()

    async def exit_of(self, pid: int) -> int:
        """The exit code the zygote reports for its child ``pid`` (waits for it)."""
        async with asyncio.timeout(30):
            while pid not in self.exits:
                self.exited.clear()
                await self.exited.wait()
        return self.exits[pid]


@asynccontextmanager
async def zygote(tmp_path: Path) -> AsyncIterator[Zygote]:
    path = str(tmp_path / "zygote")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        ZYGOTE,
        path,
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stdin is not None
    assert await asyncio.wait_for(proc.stdout.readline(), 60) == b"ready\n"
    found = Zygote(proc, path)
    try:
        yield found
    finally:
        if proc.returncode is None:
            proc.stdin.close()
            await asyncio.wait_for(proc.wait(), 60)
        await found.reading


async def _say(child: forkserver.Forked, line: bytes) -> list[bytes]:
    child.stdin.write(line)
    return (await asyncio.wait_for(child.stdout.readline(), 30)).split()


def _shared_kb(pid: int) -> int:
    """Memory of ``pid`` that other processes map too, in kB."""
    shared = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(("Shared_Clean:", "Shared_Dirty:")):
            shared += int(line.split()[1])
    return shared


def _fd_targets(pid: int) -> list[str]:
    """What each of ``pid``'s descriptors points to (two for one socket appear twice)."""
    found = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):  # closed meanwhile
            found.append(os.readlink(fd))
    return found


def _socket_fds(pid: int) -> int:
    """How many of ``pid``'s descriptors are sockets."""
    return sum(1 for target in _fd_targets(pid) if target.startswith("socket:"))


def test_own_children_are_forked_from_the_loaded_zygote_and_their_exits_reported(
    tmp_path: Path,
) -> None:
    async def run() -> None:
        async with zygote(tmp_path) as z:
            first = await forkserver.fork(z.path, "echo")
            second = await forkserver.fork(z.path, "echo")
            assert not first.shared and first.pid != second.pid
            assert await _say(first, b"hello\n") == [
                b"%d" % first.pid,
                b"%d" % z.proc.pid,
                b"hello",
            ]
            assert (await _say(second, b"x\n"))[:2] == [b"%d" % second.pid, b"%d" % z.proc.pid]
            # what the zygote loaded is the children's too, not a copy
            assert _shared_kb(first.pid) > 40 * 1024
            # the child keeps none of the zygote's descriptors (listener, control pipes)
            ours = set(_fd_targets(first.pid)) - {
                os.readlink(f"/proc/{first.pid}/fd/{n}") for n in (0, 1, 2)
            }
            zygotes = set(_fd_targets(z.proc.pid))
            assert not ours & zygotes
            assert len([t for t in ours if t.startswith("socket:")]) == 1  # its connection

            first.stdin.close()  # the end of its input: it exits
            await asyncio.wait_for(first.wait(), 30)
            assert await z.exit_of(first.pid) == 0
            second.kill()
            await asyncio.wait_for(second.wait(), 30)
            assert await z.exit_of(second.pid) == -9

            crashing = await forkserver.fork(z.path, "echo")
            crashing.stdin.write(b"crash\n")
            await asyncio.wait_for(crashing.wait(), 30)
            assert await z.exit_of(crashing.pid) == 1

    asyncio.run(run())


def test_one_shared_child_serves_every_client_and_exits_with_the_last(tmp_path: Path) -> None:
    def frame(data: bytes) -> bytes:
        return forkserver.FRAME.pack(len(data)) + data

    async def run() -> None:
        async with zygote(tmp_path) as z:
            one = await forkserver.fork(z.path, "upper")
            two = await forkserver.fork(z.path, "upper")
            assert one.shared and two.shared and one.pid == two.pid
            assert os.getpid() != one.pid and alive(one.pid)
            size = b"%d" % (40 * 4096 * 256)
            assert await _say(one, frame(b"abc")) == [size, b"ABC"]
            assert await _say(two, frame(b"def")) == [size, b"DEF"]
            assert await _say(one, frame(b"again")) == [size, b"AGAIN"]
            # its channel to the zygote and one socket per client: no copy of the first
            # client's connection from the zygote, where it was open at the fork
            assert _socket_fds(one.pid) == 3

            one.kill()  # only drops this client: the other is still served
            await asyncio.wait_for(one.wait(), 30)
            assert await _say(two, frame(b"still")) == [size, b"STILL"]
            two.stdin.close()
            await asyncio.wait_for(two.wait(), 30)
            assert await z.exit_of(two.pid) == 0  # the last client gone: it exits

            three = await forkserver.fork(z.path, "upper")
            assert three.pid != two.pid
            assert await _say(three, frame(b"new")) == [size, b"NEW"]
            three.stdin.close()
            await asyncio.wait_for(three.wait(), 30)

    asyncio.run(run())


def test_the_zygote_outlives_its_children_and_refuses_what_it_does_not_know(
    tmp_path: Path,
) -> None:
    async def run() -> None:
        async with zygote(tmp_path) as z:
            with pytest.raises(forkserver.ForkError, match="did not start a nothing process"):
                await forkserver.fork(z.path, "nothing")
            child = await forkserver.fork(z.path, "echo")
            assert z.proc.stdin is not None
            z.proc.stdin.close()  # the end of the zygote's input: no new children
            for _ in range(200):
                if not Path(z.path).exists():
                    break
                await asyncio.sleep(0.05)
            with pytest.raises(forkserver.ForkError, match="cannot reach the zygote"):
                await forkserver.fork(z.path, "echo")
            assert alive(z.proc.pid)  # it waits for its child
            assert (await _say(child, b"late\n"))[2] == b"late"
            child.stdin.close()
            await asyncio.wait_for(child.wait(), 30)
            assert await asyncio.wait_for(z.proc.wait(), 30) == 0
            assert await z.exit_of(child.pid) == 0

    asyncio.run(run())


def test_a_shared_kind_that_cannot_load_refuses_its_client_and_the_zygote_goes_on(
    tmp_path: Path,
) -> None:
    async def run() -> None:
        async with zygote(tmp_path) as z:
            with pytest.raises(forkserver.ForkError):
                await forkserver.fork(z.path, "broken")
            assert z.proc.returncode is None
            child = await forkserver.fork(z.path, "echo")  # still forking
            assert (await _say(child, b"after\n"))[2] == b"after"
            child.stdin.close()
            await asyncio.wait_for(child.wait(), 30)

    asyncio.run(run())
