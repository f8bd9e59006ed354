"""Console service types: console fonts and the getty programs.

They model Guix's ``console-font-service-type``, ``mingetty-service-type``
and ``agetty-service-type`` (``gnu/services/base.scm``): each opens a
``/dev/ttyN`` of a machine of its own, which a container does not have, so
:func:`system.linux_container.containerized_operating_system` drops them
(Guix bug 34211).  The getty here writes a banner and waits for a line on
its terminal; there is no login program yet.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from derivations.file_like import program_file
from derivations.gexp import gexp
from system.init_services import InitService, init_service_type
from system.services import service_extension, service_type

__all__ = [
    "AgettyConfiguration",
    "MingettyConfiguration",
    "agetty_service_type",
    "console_font_service_type",
    "mingetty_service_type",
]

_GETTY = """
device = "/dev/" + $tty
with open(device, "r+", encoding="utf-8", errors="replace") as terminal:
    terminal.write($banner)
    terminal.flush()
    terminal.readline()
"""


def _getty(name: str, tty: str, banner: str) -> InitService:
    """Return the respawning getty service of ``tty``."""
    program = program_file(name, gexp(_GETTY, tty=tty, banner=banner))
    return InitService(
        provision=(f"term-{tty}",),
        command=(program,),
        respawn=True,
        documentation=f"A login prompt on /dev/{tty}.",
    )


@dataclass(frozen=True)
class MingettyConfiguration:
    """Guix's ``<mingetty-configuration>``, reduced to its terminal."""

    tty: str = "tty1"
    banner: str = "This is a pyguix system.\n\nlogin: "


mingetty_service_type = service_type(
    "mingetty",
    [
        service_extension(
            init_service_type,
            lambda config: [_getty("mingetty", config.tty, config.banner)],
        )
    ],
    default_value=MingettyConfiguration(),
    description="Provide a console login prompt on a virtual terminal.",
)


@dataclass(frozen=True)
class AgettyConfiguration:
    """Guix's ``<agetty-configuration>``, reduced to its terminal."""

    tty: str = "ttyS0"
    baud_rate: str = "115200"


agetty_service_type = service_type(
    "agetty",
    [
        service_extension(
            init_service_type,
            lambda config: [
                _getty(
                    "agetty", config.tty, f"pyguix ({config.baud_rate} baud)\nlogin: "
                )
            ],
        )
    ],
    default_value=AgettyConfiguration(),
    description="Provide a login prompt on a serial line.",
)


_CONSOLE_FONT = """
for tty, font in $fonts:
    print(f"console font of {tty}: {font} (not loaded: no setfont yet)", flush=True)
    with open("/dev/" + tty, "rb"):
        pass
"""


def _console_font(fonts: Mapping[str, str] | Any) -> list[InitService]:
    """Return the one-shot service setting the console fonts."""
    pairs = sorted(dict(fonts).items())
    program = program_file("console-font", gexp(_CONSOLE_FONT, fonts=pairs))
    return [InitService(provision=("console-font",), command=(program,), one_shot=True)]


console_font_service_type = service_type(
    "console-font",
    [service_extension(init_service_type, _console_font)],
    default_value=(("tty1", "LatGrkCyr-8x16"),),
    description="Set the font of virtual terminals.",
)
