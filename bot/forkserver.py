"""Processes forked from one loaded parent, so what it loaded is in memory once.

A *zygote* is a process that imports and loads what its children need (modules, the
word model, read-only data), then only forks: it has no event loop, no threads, no
database connection and no socket but its own. Its children share its memory pages
until they write to them (copy-on-write); :func:`serve` freezes the garbage collector
first, so collections in the children do not write to the inherited objects either, and
hands the C heap's free pages back to the system.

The zygote listens on a Unix socket in a directory only its user can enter. A client
connects and sends one line, the *kind* of child it wants. For an *own* kind the zygote
forks a child that runs the kind's entry point with the connection as its channel to
the client. For a *shared* kind one child serves every client of the kind: the zygote
forks it for the first client and passes it each further connection (``SCM_RIGHTS``);
it answers each client's requests (length-prefixed frames) in turn, and exits once the
last client has gone (a later client gets a new one). What only a shared kind needs
(matplotlib, for charts) is loaded by the zygote when the first client asks for it. Either way the child's first line
on the connection is its process id (followed by `` shared`` for a shared child); what
follows is between the child and the client. The connection ends for the client when
the child exits (or, shared, drops it), and for the child when the client goes away.

The zygote reaps its children and writes ``exit <pid> <code>`` for each on its control
output (the code as :attr:`asyncio.subprocess.Process.returncode` gives it). At the end
of its control input it stops taking requests, and exits once its children have.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import os
import select
import signal
import socket
import struct
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

log = logging.getLogger("trainer.forkserver")

Entry = Callable[[socket.socket], None]
"""What a child of an own kind runs, given its connection to the client; it exits after."""
Handler = Callable[[bytes], bytes]
"""A shared child's answer to one request (the bytes sent back as they are)."""
Prepare = Callable[[], Handler]
"""Loads what a shared kind needs, in the zygote, the first time a client asks for it."""

REQUEST_MAX = 64
"""Longest request line (the kind's name) in bytes."""
REQUEST_TIMEOUT_S = 10.0
"""How long the zygote waits for a connected client's request line."""
FORK_TIMEOUT_S = 60.0
"""How long a client waits for its child (the first of a shared kind loads what it needs)."""
CHILDREN_GRACE_S = 30.0
"""How long a zygote whose control input ended waits for its children before killing them."""
FRAME = struct.Struct(">I")
"""A request to a shared child: its length, then its bytes."""


class ForkError(OSError):
    """The zygote could not be reached, or did not fork the child."""


# ------------------------------------------------------------------------ the zygote side


@dataclass
class _Shared:
    """A shared child, as the zygote sees it."""

    pid: int
    channel: socket.socket
    """The zygote's end of a socket pair: connections go to the child, departures come back."""
    clients: int = 0


def serve(
    path: str,
    entries: dict[str, Entry],
    shared: dict[str, Prepare],
    control_in: BinaryIO,
    control_out: BinaryIO,
) -> None:
    """Fork children of the requested kinds for the clients of ``path``, until ``control_in`` ends.

    Call it once everything the children share is loaded; what only a shared kind needs
    is loaded the first time a client asks for that kind. Writes ``ready`` to
    ``control_out`` once clients may connect, then a line for each child that exited.
    """
    _settle()
    _Zygote(path, entries, shared, control_in, control_out).run()


class _Zygote:
    def __init__(
        self,
        path: str,
        entries: dict[str, Entry],
        shared: dict[str, Prepare],
        control_in: BinaryIO,
        control_out: BinaryIO,
    ):
        self.path = path
        self.entries = entries
        self.prepare = shared
        self.handlers: dict[str, Handler] = {}
        self.control_in = control_in
        self.control_out = control_out
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(16)
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # (the wake-up pipe is what counts)
        signal.set_wakeup_fd(self.wake_w)
        self.children: set[int] = set()
        self.shared: dict[str, _Shared] = {}
        self.poller = select.poll()
        for fd in (control_in.fileno(), self.listener.fileno(), self.wake_r):
            self.poller.register(fd, select.POLLIN)

    def own_fds(self) -> list[int]:
        """What a child must not keep open: the zygote's listener, pipes and channels."""
        fds = [self.listener.fileno(), self.wake_r, self.wake_w]
        fds += [self.control_in.fileno(), self.control_out.fileno()]
        return fds + [s.channel.fileno() for s in self.shared.values()]

    def run(self) -> None:
        try:
            self.control_out.write(b"ready\n")
            self.control_out.flush()
            while True:
                events = dict(self.poller.poll())
                if self.wake_r in events:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self.wake_r, 4096)
                    self.reap()
                channels = {s.channel.fileno(): kind for kind, s in self.shared.items()}
                for fd, kind in channels.items():
                    if fd in events:
                        self.departed(kind)
                if self.listener.fileno() in events:
                    conn, _ = self.listener.accept()
                    with conn:
                        try:
                            self.answer(conn)
                        except Exception:  # one client's failure never ends the zygote
                            log.exception("the zygote could not answer a client")
                if self.control_in.fileno() in events and not os.read(
                    self.control_in.fileno(), 4096
                ):
                    break  # the end of input: the client that started us stops or died
        finally:
            self.listener.close()
            with contextlib.suppress(OSError):
                os.unlink(self.path)
                os.rmdir(os.path.dirname(self.path))  # its private directory, if now empty
            for kind in list(self.shared):
                self.retire(kind)
            self.outlive()

    def reap(self) -> None:
        """Note the children that exited, and report them."""
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            self.children.discard(pid)
            with contextlib.suppress(OSError):
                code = os.waitstatus_to_exitcode(status)
                self.control_out.write(b"exit %d %d\n" % (pid, code))
                self.control_out.flush()

    def answer(self, conn: socket.socket) -> None:
        """Read a client's request and fork its child, or pass it to the shared one."""
        conn.settimeout(REQUEST_TIMEOUT_S)
        request = b""
        try:
            while not request.endswith(b"\n") and len(request) <= REQUEST_MAX:
                byte = conn.recv(1)  # one at a time: what follows the line is the child's
                if not byte:
                    break
                request += byte
        except OSError as exc:
            log.warning("a client of the zygote sent no request (%s)", exc)
            return
        conn.settimeout(None)
        kind = request.decode(errors="replace").strip()
        if kind in self.entries:
            self.children.add(self.fork(_own_child(self.entries[kind], conn)))
        elif kind in self.prepare:
            self.pass_on(kind, conn)
        else:
            log.warning("the zygote was asked for an unknown kind of child: %r", request)

    def fork(self, run: Callable[[], None], *also: int) -> int:
        """Fork a child that runs ``run`` without the zygote's descriptors (and ``also``)."""
        own = [*self.own_fds(), *also]
        pid = os.fork()
        if pid == 0:
            _child(run, own)  # never returns
        return pid

    def pass_on(self, kind: str, conn: socket.socket) -> None:
        """Give a connection to the shared child of ``kind``, started if there is none."""
        for _ in range(2):  # a child that has just died is replaced once
            server = self.shared.get(kind) or self.start_shared(kind, conn.fileno())
            try:
                socket.send_fds(server.channel, [b"+"], [conn.fileno()])
            except OSError:
                self.retire(kind)
                continue
            server.clients += 1
            return
        log.warning("the zygote could not pass a client to a %s process", kind)

    def start_shared(self, kind: str, *also: int) -> _Shared:
        """Fork the shared child of ``kind`` (without ``also``: the connection being passed)."""
        handler = self.handlers.get(kind)
        if handler is None:  # loaded now, after the children forked before: not theirs
            handler = self.handlers[kind] = self.prepare[kind]()
            _settle()
        mine, theirs = socket.socketpair()
        with theirs:
            pid = self.fork(lambda: _serve_clients(theirs, handler), mine.fileno(), *also)
        self.children.add(pid)
        server = self.shared[kind] = _Shared(pid, mine)
        self.poller.register(mine.fileno(), select.POLLIN)
        return server

    def departed(self, kind: str) -> None:
        """A shared child reports clients that left (or it is gone): retire it when idle."""
        server = self.shared[kind]
        try:
            news = server.channel.recv(4096)
        except OSError:
            news = b""
        server.clients -= news.count(b"-")
        if not news or server.clients <= 0:
            self.retire(kind)

    def retire(self, kind: str) -> None:
        """Close the channel to a shared child: it exits (no client is on the way to it)."""
        server = self.shared.pop(kind)
        self.poller.unregister(server.channel.fileno())
        server.channel.close()

    def outlive(self) -> None:
        """Wait for the children to exit (they end with their clients); kill them after a grace."""
        deadline = time.monotonic() + CHILDREN_GRACE_S
        while self.children and time.monotonic() < deadline:
            self.reap()
            time.sleep(0.05)
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        while self.children:
            try:
                pid, _ = os.waitpid(-1, 0)
            except ChildProcessError:
                return
            self.children.discard(pid)


def _own_child(entry: Entry, conn: socket.socket) -> Callable[[], None]:
    """An own kind's child: its id on the connection, then the entry point."""

    def run() -> None:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        conn.sendall(b"%d\n" % os.getpid())
        entry(conn)

    return run


def _serve_clients(channel: socket.socket, handler: Handler) -> None:
    """A shared child: answer the requests of the clients the zygote passes, one at a time.

    Ctrl-C and SIGTERM are for the clients to handle: it exits when the zygote closes the
    channel, which it does once the last client has gone.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    me = b"%d shared\n" % os.getpid()
    clients: dict[int, socket.socket] = {}
    poller = select.poll()
    poller.register(channel.fileno(), select.POLLIN)

    def drop(client: socket.socket) -> None:
        poller.unregister(client.fileno())
        del clients[client.fileno()]
        client.close()
        with contextlib.suppress(OSError):  # (a zygote that is gone closed the channel)
            channel.sendall(b"-")

    while True:
        for fd, _ in poller.poll():
            if fd == channel.fileno():
                news, fds, _, _ = socket.recv_fds(channel, 64, 64)
                if not news:
                    return  # retired by the zygote (or it is gone)
                for new in fds:
                    client = clients[new] = socket.socket(fileno=new)
                    poller.register(new, select.POLLIN)
                    with contextlib.suppress(OSError):
                        client.sendall(me)
            elif fd in clients:
                client = clients[fd]
                try:
                    head = _exactly(client, FRAME.size)
                    request = _exactly(client, FRAME.unpack(head)[0]) if head else None
                    if request is None:
                        drop(client)
                        continue
                    client.sendall(handler(request))
                except OSError:
                    drop(client)


def _exactly(sock: socket.socket, size: int) -> bytes | None:
    """``size`` bytes from a socket, or None if it ends first."""
    data = b""
    while len(data) < size:
        more = sock.recv(size - len(data))
        if not more:
            return None
        data += more
    return data


def _settle() -> None:
    """Make what is loaded now cheap to share with the children forked from here on.

    The garbage collector never scans it (in the zygote or in a child), and the free parts
    of the C heap go back to the system (glibc), so no child maps them.
    """
    gc.collect()
    gc.freeze()
    _give_back_free_memory()


def _give_back_free_memory() -> None:
    """Return the free parts of the C heap to the system (glibc), so no child maps them."""
    try:
        libc = ctypes.CDLL(None)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return  # another C library
    trim(0)


def _child(run: Callable[[], None], own_fds: list[int]) -> None:
    """Run in a forked child without the zygote's descriptors, then exit without its clean-up."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in own_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        run()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def take_stdio() -> tuple[BinaryIO, BinaryIO]:
    """The zygote's control input and output, moved off standard input and output.

    Standard input becomes ``/dev/null`` and standard output the standard error, in the
    zygote and so in its children: what a library prints goes to the log, and no child
    holds the control pipes.
    """
    control_in = os.fdopen(os.dup(0), "rb", buffering=0)
    control_out = os.fdopen(os.dup(1), "wb")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    return control_in, control_out


# ------------------------------------------------------------------------ the client side


class Forked:
    """A child of a zygote, seen from its client: its id, its input and its output.

    Like the part of :class:`asyncio.subprocess.Process` the bot uses, but :meth:`wait`
    returns when the connection to the child ended (it exited, or, shared, dropped this
    client), without a code: the zygote reports codes to the process that started it.
    """

    def __init__(
        self,
        pid: int,
        shared: bool,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        ended: asyncio.Future[None],
    ):
        self.pid = pid
        self.shared = shared
        """Whether the child serves other clients too."""
        self.stdout = reader
        self.stdin = _Input(writer)
        self._writer = writer
        self._ended = ended

    def ended(self) -> bool:
        """Whether the connection to the child ended."""
        return self._ended.done()

    def kill(self) -> None:
        """Kill the child (SIGKILL) unless it is gone; a shared child only drops this client."""
        if self.shared:
            self._writer.close()
        elif not self.ended():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    async def wait(self) -> None:
        """Wait until the connection to the child ended, then close this end."""
        await asyncio.shield(self._ended)
        self._writer.close()


class _Input:
    """The child's input: :meth:`close` ends it, while its output can still be read."""

    def __init__(self, writer: asyncio.StreamWriter):
        self._writer = writer
        self._closed = False

    def write(self, data: bytes) -> None:
        self._writer.write(data)

    def is_closing(self) -> bool:
        return self._closed or self._writer.is_closing()

    def close(self) -> None:
        if not self.is_closing():
            self._closed = True
            with contextlib.suppress(OSError):
                self._writer.write_eof()


class _Protocol(asyncio.StreamReaderProtocol):
    """Stream protocol that also notes when the other end closed."""

    def __init__(self, reader: asyncio.StreamReader, ended: asyncio.Future[None]):
        super().__init__(reader)
        self._ended_at = ended

    def _end(self) -> None:
        if not self._ended_at.done():
            self._ended_at.set_result(None)

    def eof_received(self) -> bool:
        self._end()
        return bool(super().eof_received())

    def connection_lost(self, exc: Exception | None) -> None:
        self._end()
        super().connection_lost(exc)


async def fork(path: str, kind: str, *, limit: int = 2**16) -> Forked:
    """A child of ``kind`` from the zygote listening at ``path`` (new, or the shared one).

    Raises :class:`ForkError` if the zygote cannot be reached or does not fork it.
    """
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit)
    ended: asyncio.Future[None] = loop.create_future()
    try:
        transport, protocol = await loop.create_unix_connection(
            lambda: _Protocol(reader, ended), path
        )
    except OSError as exc:
        raise ForkError(f"cannot reach the zygote ({exc.strerror or exc})") from None
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    writer.write(kind.encode() + b"\n")
    try:
        fields = (await asyncio.wait_for(reader.readline(), FORK_TIMEOUT_S)).split()
    except TimeoutError:
        fields = []
    if not fields or not fields[0].isdigit() or fields[1:] not in ([], [b"shared"]):
        writer.close()
        raise ForkError(f"the zygote did not start a {kind} process")
    return Forked(int(fields[0]), fields[1:] == [b"shared"], reader, writer, ended)
