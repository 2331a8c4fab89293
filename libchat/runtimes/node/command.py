"""The command line and environment of one Node program instance.

Through the launcher (:mod:`.launcher`, the default) the child is
``node <entry> --socket=... --port=...`` started in its directory, in a session
of its own, by ``posix_spawnp`` attributes. Spawned by the reactor itself
(``wrap``) it is ``env -C <dir> setsid node ...`` so that (a) it leads its own
process group and its grandchildren die with it, and (b) Twisted may use
``posix_spawn`` instead of forking the whole server (no ``path`` argument);
that costs two execs (~2 ms of a cold start).

The memory API's address is the one it is *bound* to (learned from its
listening port, so ``tcp:0`` and ``interface=`` are honoured): a TCP listener
gives ``--port=N`` and ``LIBCHAT_API_HOST``; a UNIX one gives
``LIBCHAT_API_SOCKET=<path>`` and no ``--port`` (there is none).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import attrs

NODE_SDK_DIR = Path(__file__).parent / "sdk"

# a wildcard listener is reached through the loopback of its family
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}


@attrs.frozen
class ApiAddress:
    """Where programs reach the memory API: a TCP ``host``/``port``, or the
    path of a UNIX ``socket``. ``port`` 0 and no socket: not listening (yet)."""

    host: str = "127.0.0.1"
    port: int = 0
    socket: str | None = None

    @classmethod
    def of(cls, address: Any) -> "ApiAddress":
        """From a listening port's ``getHost()`` (IPv4Address, IPv6Address,
        UNIXAddress) or None."""
        if address is None:
            return cls()
        host, port = getattr(address, "host", None), getattr(address, "port", None)
        if isinstance(port, int):
            host = str(host or "")
            return cls(host=_WILDCARDS.get(host, host), port=port)
        name = getattr(address, "name", None)
        if name:
            return cls(socket=os.fsdecode(name))
        return cls()


@attrs.frozen
class Command:
    argv: list[str]
    env: dict[str, str]
    path: str | None  # a working directory for spawnProcess (only without env/setsid)


class NodeCommand:
    """Builds the ``spawnProcess`` arguments for program instances."""

    def __init__(self, node: str, base_env: dict[str, str], magic: int,
                 max_frame: int, wrap: bool = True) -> None:
        self.node = node
        self.base_env = dict(base_env)
        self.base_env.pop("LIBCHAT_TOKEN", None)
        for name in ("LIBCHAT_API_HOST", "LIBCHAT_API_SOCKET", "LIBCHAT_DIALOG_ID"):
            self.base_env.pop(name, None)  # only ever what this server says
        self.magic = magic
        self.max_frame = max_frame
        # through the launcher (libchat.runtimes.node.launcher) the child gets
        # its session and working directory from posix_spawn: no wrapper execs
        self.env_bin = shutil.which("env") if wrap else None
        self.setsid_bin = shutil.which("setsid") if wrap else None

    def build(self, directory: Path, entry: Path, socket_path: Path, token: str,
              dialog_id: str, api: ApiAddress) -> Command:
        argv = [self.node, str(entry), f"--socket={socket_path}"]
        env = dict(self.base_env)
        env.update({
            "LIBCHAT_TOKEN": token,
            "LIBCHAT_MAGIC": str(self.magic),
            "LIBCHAT_MAX_FRAME": str(self.max_frame),
            "NODE_PATH": os.pathsep.join(filter(None, [str(NODE_SDK_DIR),
                                                       self.base_env.get("NODE_PATH")])),
        })
        if api.socket is not None:
            env["LIBCHAT_API_SOCKET"] = api.socket
        else:
            argv.append(f"--port={api.port}")
            env["LIBCHAT_API_HOST"] = api.host
        if dialog_id:  # a warm instance has no dialog yet
            env["LIBCHAT_DIALOG_ID"] = dialog_id
        if self.env_bin and self.setsid_bin:
            return Command([self.env_bin, "-C", str(directory), self.setsid_bin] + argv, env,
                           None)
        # launched: a session of its own from posix_spawn; else no setsid, no group cleanup
        return Command(argv, env, str(directory))
