"""Daemons a system can run: a log collector and a static HTTP server.

Both are Python programs built into the store (``program_file``) and run by
the init supervisor; they extend :data:`system.base.init_service_type`.

* The *log collector* is a small syslog: it binds a Unix datagram socket
  (``/dev/log`` by default) and appends each message it receives, with a
  UTC time stamp, to ``/var/log/messages``.
* The *HTTP server* serves a directory of the store (any file-like object
  lowering to a directory) read-only, on a port, as ``python -m
  http.server`` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from derivations.file_like import program_file
from derivations.gexp import gexp
from system.init_services import InitService, init_service_type
from system.services import service_extension, service_type

__all__ = [
    "HttpServerConfiguration",
    "LogCollectorConfiguration",
    "http_server_service_type",
    "log_collector_service_type",
]


_LOG_COLLECTOR = """
import contextlib
import socket
import time

path, output = $socket_path, $output_file
os.makedirs(os.path.dirname(path), exist_ok=True)
os.makedirs(os.path.dirname(output), exist_ok=True)
with contextlib.suppress(FileNotFoundError):
    os.unlink(path)
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind(path)
os.chmod(path, 0o666)
print(f"log collector: listening on {path}, writing {output}", flush=True)
with open(output, "a", encoding="utf-8") as log:
    while True:
        data = sock.recv(65536)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        text = data.decode("utf-8", "replace").rstrip("\\n")
        log.write(f"{stamp} {text}\\n")
        log.flush()
"""


@dataclass(frozen=True)
class LogCollectorConfiguration:
    """Where the log collector listens and writes."""

    socket: str = "/dev/log"
    output: str = "/var/log/messages"


def _log_collector(config: LogCollectorConfiguration) -> list[InitService]:
    """Return the log collector's init service."""
    program = program_file(
        "log-collector",
        gexp(_LOG_COLLECTOR, socket_path=config.socket, output_file=config.output),
    )
    return [
        InitService(
            provision=("log-collector", "syslogd"),
            command=(program,),
            respawn=True,
            documentation="Collect messages sent to a syslog-like socket.",
        )
    ]


log_collector_service_type = service_type(
    "log-collector",
    [service_extension(init_service_type, _log_collector)],
    default_value=LogCollectorConfiguration(),
    description="Collect log messages sent to a Unix socket into one file.",
)


_HTTP_SERVER = """
import functools
import http.server

root, address, port = $root, $address, $port
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=root)
server = http.server.ThreadingHTTPServer((address, port), handler)
print(f"http server: serving {root} on {address}:{port}", flush=True)
server.serve_forever()
"""


@dataclass(frozen=True)
class HttpServerConfiguration:
    """What the HTTP server serves, and where."""

    root: Any
    """A file-like object lowering to the directory to serve."""

    port: int = 8080
    address: str = "0.0.0.0"
    name: str = "httpd"
    """The init service's name."""

    requirement: tuple[str, ...] = ("loopback",)


def _http_server(config: HttpServerConfiguration) -> list[InitService]:
    """Return the HTTP server's init service."""
    program = program_file(
        "http-server",
        gexp(_HTTP_SERVER, root=config.root, address=config.address, port=config.port),
    )
    return [
        InitService(
            provision=(config.name,),
            requirement=config.requirement,
            command=(program,),
            respawn=True,
            documentation="Serve a store directory over HTTP.",
        )
    ]


http_server_service_type = service_type(
    "http-server",
    [service_extension(init_service_type, _http_server)],
    description="Serve a directory of the store over HTTP.",
)
