"""liblsl configuration that keeps discovery on this machine.

LSL finds outlets by multicast, which some networks and containers block.
:func:`write_loopback_config` writes a liblsl configuration that keeps discovery on this
machine (unicast to 127.0.0.1); point the ``LSLAPICFG`` environment variable at it before the
first LSL call of the process (:func:`use_loopback_config` does both).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path


def write_loopback_config(path: str | Path, session_id: str = "default") -> Path:
    """Write a liblsl configuration that keeps LSL discovery on this machine.

    Outlets and inlets are found by unicast queries to 127.0.0.1 (no multicast, no IPv6), so
    LSL works where multicast is blocked and nothing leaves the machine.

    Parameters
    ----------
    path : str | Path
        Where to write the file.
    session_id : str
        LSL session id: only outlets and inlets with the same session id see each other,
        which isolates concurrent runs on one machine.

    Returns
    -------
    path : Path
        The file written. Set ``os.environ["LSLAPICFG"]`` to it before the process (and any
        child process) makes its first LSL call; liblsl reads its configuration only once.
    """
    path = Path(path)
    path.write_text(
        "[ports]\nIPv6 = disable\n"
        "[multicast]\nResolveScope = machine\n"
        f"[lab]\nKnownPeers = {{127.0.0.1}}\nSessionID = {session_id}\n"
        "[log]\nlevel = -1\n"
    )
    return path


def use_loopback_config(session_id: str) -> Path:
    """Point this process and its future child processes at a private loopback configuration.

    Writes :func:`write_loopback_config` into a temporary folder (removed when the process
    exits) and sets ``LSLAPICFG`` to it. Call it before the process's first LSL call.

    Parameters
    ----------
    session_id : str
        LSL session id; a unique one isolates this process from other LSL users.

    Returns
    -------
    path : Path
        The configuration file written.
    """
    folder = tempfile.mkdtemp(prefix="neurocast-lsl-")
    atexit.register(shutil.rmtree, folder, True)
    path = write_loopback_config(Path(folder) / "lsl_api.cfg", session_id)
    os.environ["LSLAPICFG"] = str(path)
    return path
