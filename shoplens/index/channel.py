"""The local channel of a serving app: a Unix socket in the index folder that only the same user can use.

The socket file is created with mode 0600 (Linux checks write permission on connect), and every
connection's peer credentials (SO_PEERCRED) must carry our own uid: other users' processes, and anything
that only reaches the app through its HTTP port (the public share link included), cannot use it.

Protocol: the client sends one JSON line {"op": ..., "args": {...}}; the app answers with JSON lines:
{"out": text} (text for the client's stderr, e.g. a progress bar), then exactly one {"result": ...} or
{"error": message}. A connection closed before that final line means the app stopped.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import struct
import sys
import threading
from pathlib import Path
from typing import Callable

from shoplens.store import StoreError

log = logging.getLogger("shoplens.index.channel")

SOCKET_NAME = ".shoplens-app.sock"
# sun_path holds 108 bytes; longer folders are reached through /proc/self/fd/N/ (see _address).
MAX_SOCKET_PATH = 100


class ChannelError(StoreError):
    """The app's channel failed (the app stopped mid-request, or refused it); the message says what to do."""


class StaleChannel(ChannelError):
    """A socket file is there but no app listens on it (an app that died without cleaning up)."""


def socket_path(index: str | Path) -> Path:
    """Where an app serving `index` listens."""
    return Path(index) / SOCKET_NAME


class _Address:
    """A socket path short enough for sun_path: itself, or through an open descriptor of its folder."""

    def __init__(self, path: Path):
        self.path = path
        self._fd = None
        if len(os.fsencode(str(path))) <= MAX_SOCKET_PATH:
            self.name = str(path)
        else:
            self._fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
            self.name = f"/proc/self/fd/{self._fd}/{path.name}"

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def peer_uid(conn: socket.socket) -> int:
    """The uid of the process on the other end of a Unix socket."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


class Reply:
    """What a handler writes to: text for the client's stderr (a file-like object, so tqdm can draw on it)."""

    def __init__(self, conn: socket.socket):
        self._conn = conn
        self._lock = threading.Lock()
        self.gone = False  # the client left: the work goes on, nothing more is sent
        self.encoding = "utf-8"  # tqdm draws its unicode bar, as on the indexer's own terminal

    def send(self, message: dict) -> None:
        data = (json.dumps(message) + "\n").encode()
        with self._lock:
            if self.gone:
                return
            try:
                self._conn.sendall(data)
            except OSError:
                self.gone = True

    # file-like, for tqdm and print
    def write(self, text: str) -> int:
        if text:
            self.send({"out": text})
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


Handler = Callable[[dict, Reply], object]


class Channel:
    """The app's side: listens on the index folder's socket and runs a handler per request, each in a thread."""

    def __init__(self, index: str | Path, handlers: dict[str, Handler]):
        self.path = socket_path(index)
        self.handlers = {"ping": lambda args, reply: {"app": "shoplens", "pid": os.getpid()}, **handlers}
        self._server: socket.socket | None = None
        self._inode: int | None = None
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()

    def start(self) -> "Channel":
        """Listen (replacing a stale socket left by a dead app; refusing when a live app already listens)."""
        if self.path.exists() or self.path.is_symlink():
            try:
                close_quietly(connect(self.path.parent))
                raise ChannelError(f"another shoplens app already serves {self.path.parent}")
            except StaleChannel:
                self.path.unlink(missing_ok=True)
        address = _Address(self.path)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # the file is born 0600: no window where others could connect
        try:
            server.bind(address.name)
        finally:
            os.umask(old)
            address.close()
        os.chmod(self.path, 0o600)
        server.listen(16)
        self._server = server
        self._inode = self.path.stat().st_ino
        self._closing.clear()
        # The loop gets the socket itself: close() sets self._server to None, which it must never read.
        self._thread = threading.Thread(target=self._accept, args=(server,), name="shoplens-channel", daemon=True)
        self._thread.start()
        return self

    def _accept(self, server: socket.socket) -> None:
        while not self._closing.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return  # shut down by close()
            if self._closing.is_set():  # a client that came in as we closed: it sees the app stop
                close_quietly(conn)
                return
            threading.Thread(target=self._serve, args=(conn,), name="shoplens-channel-request", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        reply = Reply(conn)
        try:
            line = conn.makefile("rb").readline()
            # Refused only after its request is read: closing with unread data would reset the connection and
            # the client would see "the app stopped" instead of why.
            if peer_uid(conn) != os.getuid():
                reply.send({"error": "refused: the app's channel is for its owner's processes only"})
                return
            request = json.loads(line or b"null")
            if not isinstance(request, dict) or request.get("op") not in self.handlers:
                reply.send({"error": f"unknown request {request!r}"})
                return
            try:
                result = self.handlers[request["op"]](dict(request.get("args") or {}), reply)
            except StoreError as exc:  # and the other errors a user can act on, turned into StoreError by handlers
                reply.send({"error": str(exc)})
            except Exception as exc:  # noqa: BLE001 - the app keeps serving; the client gets one line
                log.exception("channel request %s failed", request.get("op"))
                reply.send({"error": f"the app failed to run it: {exc}"})
            else:
                reply.send({"result": result})
        except (OSError, ValueError) as exc:
            log.warning("channel: bad request: %s", exc)
        finally:
            close_quietly(conn)

    def close(self) -> None:
        """Stop listening, wait for the accept loop to end, and remove the socket file (only our own: a newer
        app's is left alone). Requests already accepted run to their end in their own threads."""
        server, self._server = self._server, None
        if server is not None:
            self._closing.set()
            # close() alone does not wake a thread blocked in accept() on Linux (it would wait for ever on a
            # socket nobody can reach); shutdown() does: accept() fails at once and the loop ends.
            try:
                server.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            thread = self._thread
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=5)
            close_quietly(server)
            try:
                if self.path.stat().st_ino == self._inode:
                    self.path.unlink()
            except FileNotFoundError:
                pass


def close_quietly(sock: socket.socket | None) -> None:
    if sock is not None:
        try:
            sock.close()
        except OSError:
            pass


def connect(index: str | Path, timeout: float = 5.0) -> socket.socket | None:
    """A connection to the app serving `index`; None when no app ever listened there; StaleChannel when the
    socket file is left over from an app that is no longer running."""
    path = socket_path(index)
    if not (path.exists() or path.is_symlink()):
        return None
    address = _Address(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(address.name)
    except (ConnectionRefusedError, FileNotFoundError) as exc:
        close_quietly(sock)
        raise StaleChannel(f"{path} is left over from a shoplens app that is no longer running") from exc
    except PermissionError as exc:
        close_quietly(sock)
        raise ChannelError(f"{path} belongs to another user's app; it cannot be used from here") from exc
    except OSError as exc:
        close_quietly(sock)
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            raise StaleChannel(f"{path} is left over from a shoplens app that is no longer running") from exc
        raise ChannelError(f"cannot reach the app serving {index}: {exc}") from exc
    finally:
        address.close()
    sock.settimeout(None)  # a sync takes as long as it takes
    return sock


def request(sock: socket.socket, op: str, args: dict | None = None, stderr=None, what: str = "the request") -> object:
    """Send one request on a connection from `connect` and return its result; {"out"} text goes to `stderr`.

    ChannelError when the app refuses it or stops before answering (the connection closes early)."""
    stderr = stderr or sys.stderr
    try:
        sock.sendall((json.dumps({"op": op, "args": args or {}}) + "\n").encode())
        for line in sock.makefile("rb"):
            message = json.loads(line)
            if "out" in message:
                stderr.write(message["out"])
                stderr.flush()
            elif "error" in message:
                raise ChannelError(message["error"])
            elif "result" in message:
                return message["result"]
    except ChannelError:
        raise  # the app's own answer (a UserError, hence a ValueError too): never taken for a broken line
    except (OSError, ValueError):
        pass
    finally:
        close_quietly(sock)
    raise ChannelError(f"the app stopped before {what} finished")
