"""Worker processes for tests: real `hub worker` subprocesses sharing the test's database and Redis."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hub.settings import Settings
from tests import log_audit

ROOT = Path(__file__).resolve().parent.parent


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in value.items()) + "}"
    return json.dumps(str(value))


def write_settings(settings: Settings, path: Path) -> Path:
    """Write the settings a test built into a TOML file a subprocess can load."""
    data = settings.model_dump(by_alias=True)
    lines: list[str] = []
    for section, values in data.items():
        if section == "channels" or not isinstance(values, dict):
            continue
        lines.append(f"[{section}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in values.items() if v is not None]
    for name, conf in data["channels"].items():
        lines.append(f"[channels.{name}]")
        tables = {k: v for k, v in conf.items() if isinstance(v, list) and v and isinstance(v[0], dict)}
        lines += [f"{k} = {_toml_value(v)}" for k, v in conf.items() if k not in tables and v is not None]
        for key, items in tables.items():
            for item in items:
                lines.append(f"[[channels.{name}.{key}]]")
                lines += [f"{k} = {_toml_value(v)}" for k, v in item.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    log_audit.forbid_settings(settings)
    return path


@contextmanager
def worker_processes(
    settings_file: Path, count: int = 1, env: dict[str, str] | None = None
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Start ``count`` `hub worker` processes; always stop them (SIGTERM, then SIGKILL).

    They log at DEBUG (the hub's most verbose) into files the log audit reads (tests/log_audit.py).
    """
    environ = {**os.environ, "HUB_LOG__LEVEL": "DEBUG", **(env or {}), "PYTHONUNBUFFERED": "1"}
    procs = []
    for _ in range(count):
        path = log_audit.output_file("worker")
        with path.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "hub.cli", "--settings", str(settings_file), "worker"],
                cwd=ROOT,
                env=environ,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _outputs[proc.pid] = path
        procs.append(proc)
    try:
        yield procs
    finally:
        for proc in procs:
            stop(proc)


_outputs: dict[int, Path] = {}


def output_of(proc: subprocess.Popen[bytes], tail: int = 3000) -> str:
    """The end of what a worker started by ``worker_processes`` printed (for a test's failure message)."""
    path = _outputs.get(proc.pid)
    if path is None or not path.exists():
        return ""
    return path.read_bytes()[-tail:].decode(errors="replace")


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        except ProcessLookupError:
            pass


def kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL: no cleanup, no goodbye, as a crash or an OOM kill would do."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
