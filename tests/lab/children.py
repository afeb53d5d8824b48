"""Child processes of the lab: started with their output in a log file, ready when they say
so (a line matching a pattern, awaited with a deadline, not a sleep), stopped with SIGTERM and
then SIGKILL, also when the test fails."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import re
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

START_SECONDS = 60.0  # for any child to say it is ready
STOP_SECONDS = 10.0
PR_SET_PDEATHSIG = 1
TESTS = Path(__file__).resolve().parent.parent  # tests/: where `lab` and `fakeapple` live


def python(module: str, *args: str) -> list[str]:
    """argv running `python -m module args` with this interpreter (see `environment`)."""
    return [sys.executable, "-m", module, *args]


def environment() -> dict[str, str]:
    """This process's environment with tests/ on PYTHONPATH, so children import the lab."""
    path = [str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path)}


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the test process dies, even by SIGKILL."""
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


async def stop_process(
    process: asyncio.subprocess.Process, seconds: float = STOP_SECONDS, *, kill: bool = False
) -> None:
    """SIGTERM (SIGKILL with `kill`), then SIGKILL if it has not exited within `seconds`."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.kill() if kill else process.terminate()
        try:  # not wait_for: on 3.11 it can swallow a cancel that comes as the wait ends
            async with asyncio.timeout(seconds):
                await process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


class Child:
    """A process whose stdout and stderr go, line by line, to `log`."""

    def __init__(self, process: asyncio.subprocess.Process, log: Path) -> None:
        self.process = process
        self.log = log
        self._copier: asyncio.Task[None] | None = None

    @classmethod
    async def start(
        cls,
        argv: Sequence[str],
        log: Path,
        ready: str | None = None,
        seconds: float = START_SECONDS,
        stdin: int | None = asyncio.subprocess.DEVNULL,
    ) -> tuple[Child, str]:
        """Start argv; with `ready` (a regular expression) wait until a line matches it and
        return that line as well. Fails, showing the log's tail, if the child ends first."""
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=stdin,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            preexec_fn=_die_with_parent,
            env=environment(),
        )
        child = cls(process, log)
        try:
            line = await child._until(re.compile(ready), seconds) if ready else ""
        except BaseException:
            await child.stop()
            raise
        child._copier = asyncio.create_task(child._copy())
        return child, line

    async def _until(self, pattern: re.Pattern[str], seconds: float) -> str:
        assert self.process.stdout is not None
        with self.log.open("a") as log:
            try:
                async with asyncio.timeout(seconds):
                    while raw := await self.process.stdout.readline():
                        line = raw.decode(errors="replace")
                        log.write(line)
                        if pattern.search(line):
                            return line.strip()
            except TimeoutError:
                pass
        tail = self.log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{self.log.stem} never said {pattern.pattern!r}:\n{tail}")

    async def _copy(self) -> None:
        assert self.process.stdout is not None
        with self.log.open("ab") as log:
            while raw := await self.process.stdout.readline():
                log.write(raw)
                log.flush()

    async def stop(self) -> None:
        await stop_process(self.process)
        if self._copier is not None:
            with contextlib.suppress(TimeoutError):  # not wait_for, as in stop_process
                async with asyncio.timeout(STOP_SECONDS):
                    await self._copier
