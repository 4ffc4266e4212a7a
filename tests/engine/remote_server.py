"""A real engine server for tests (``python -m engine.remote.server --port 0``, one worker, one thread, a token)
and its log, read on a thread: the remote engine's tests (tests/engine/test_remote.py) and the add-on's against it
(tests/addon/test_blender_remote.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TOKEN = "test-token-0123456789abcdef"
START_TIMEOUT_S = 120.0
MESSAGE_TIMEOUT_S = 120.0
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


class ServerUnderTest:
    """``python -m engine.remote.server --port 0 ARGS`` with its log read on a thread; `url` once it serves."""

    def __init__(self, folder: Path, *args: str, token: str | None = TOKEN, url_scheme: str = "ws"):
        command = [sys.executable, "-m", "engine.remote.server", "--port", "0", *args]
        if token is not None:
            token_file = folder / "token"
            token_file.write_text(token + "\n")
            token_file.chmod(0o600)
            command += ["--token-file", str(token_file)]
        path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        environment = {**os.environ, **ONE_THREAD, "PYTHONPATH": path}
        self.process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                                        env=environment)  # fmt: skip
        self.lines: list[str] = []
        self._changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        self.url = self.wait_for(rf"serving on ({url_scheme}://\S+)", START_TIMEOUT_S).group(1)
        self.root = Path(self.wait_for(r"job folders in (\S+)").group(1))

    def _read(self) -> None:
        for line in self.process.stderr:
            with self._changed:
                self.lines.append(line.rstrip())
                self._changed.notify_all()
        with self._changed:
            self.lines.append("<end of log>")
            self._changed.notify_all()

    def wait_for(self, pattern: str, timeout_s: float = MESSAGE_TIMEOUT_S, since: int = 0) -> re.Match:
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                for line in self.lines[since:]:
                    if match := re.search(pattern, line):
                        return match
                remaining = deadline - time.monotonic()
                assert remaining > 0 and "<end of log>" not in self.lines, f"no {pattern!r} in the log:\n{self.log()}"
                self._changed.wait(remaining)

    def log(self) -> str:
        return "\n".join(self.lines)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            return self.process.wait(timeout=60)
        finally:
            self.process.kill()
