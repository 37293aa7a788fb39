"""Keep TensorFlow's start-up noise out of the user's terminal and out of HTTP responses.

TensorFlow writes C++ log lines (CUDA probing, CPU feature notices) straight to file
descriptor 2, some of them before any setting can silence them, and Keras prints progress bars
to stdout. Front ends call :func:`silence_tensorflow` first thing; the CLI also filters the
native log lines out of its stderr with :func:`filter_native_stderr`.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import sys
import threading

# absl / glog line prefixes such as "I0000 00:00:1795940030.047177    2143 cudart_stub.cc:31]".
_NATIVE_LOG_LINE = re.compile(
    rb"^(?:[IWE]\d{4} \d\d:\d\d:[\d.]+\s+\d+ \S+:\d+\]|WARNING: All log messages before absl)"
)


def silence_tensorflow() -> None:
    """Hide TensorFlow's C++ info logs and Python warnings; keep real errors visible."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    logging.getLogger("absl").setLevel(logging.ERROR)


def quiet_keras() -> None:
    """Stop Keras from printing progress bars (they would leak into HTTP responses)."""
    import keras

    keras.utils.disable_interactive_logging()


def filter_native_stderr() -> None:
    """Drop absl/glog lines written to fd 2 by native code; pass everything else through.

    Only for the CLI process: a thread copies a pipe to the real stderr, line by line.
    """
    if os.environ.get("WGA_NATIVE_LOGS"):  # set it to see TensorFlow's own logs
        return
    try:
        real_stderr = os.dup(2)
    except OSError:
        return
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def pump() -> None:
        with os.fdopen(read_end, "rb") as source:
            for line in source:
                if not _NATIVE_LOG_LINE.match(line):
                    os.write(real_stderr, line)

    thread = threading.Thread(target=pump, name="wga-stderr-filter", daemon=True)
    thread.start()

    def restore() -> None:
        sys.stderr.flush()
        os.dup2(real_stderr, 2)  # closes the pipe's last write end: the pump sees EOF
        thread.join(timeout=2)

    atexit.register(restore)


WORKER_THREAD_PREFIX = "wga-"  # the render queue's and model loader's thread names start so


class _WorkerOutputToStderr:
    """A ``sys.stdout`` stand-in: writes from wga worker threads go to stderr instead.

    In a kernel-gateway kernel, stdout *is* the HTTP response being answered at that moment, so a
    stray print from a background thread (ours or a library's) would corrupt it.
    """

    def __init__(self, stream: object) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        if threading.current_thread().name.startswith(WORKER_THREAD_PREFIX):
            sys.stderr.write(text)
            return len(text)
        return self._stream.write(text)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)


def keep_worker_output_off_stdout() -> None:
    """Route stdout writes of ``wga-*`` threads to stderr (idempotent; for the backend kernel)."""
    if not isinstance(sys.stdout, _WorkerOutputToStderr):
        sys.stdout = _WorkerOutputToStderr(sys.stdout)
