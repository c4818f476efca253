"""Lance reads in a process of their own, for a process forked from one that used Lance.

Lance runs its I/O on Rust thread pools, and threads do not survive fork: a child forked while
one of them held a lock can spin for ever in its first `take` (it did here, in the reader tests,
about one run in three). pylance rebuilds its pools in a child but says it is not fork-safe. So
a reader in such a child starts this module as a new interpreter (subprocess, not
multiprocessing: DataLoader workers are daemonic and may not have multiprocessing children) and
asks it for rows over its stdin and stdout; everywhere else Lance is called in the process.

    python -m imgbench.backends._lance_server PATH

Requests are a 4-byte length and a JSON object: {"op": "meta"}, {"op": "take", "rows": [...],
"columns": [...]} or {"op": "table", "columns": [...]}. Replies are a status byte (0 ok, 1 an
error whose message follows), a 4-byte length, and JSON (meta) or an Arrow IPC stream (tables).
The server ends when its stdin closes (the reader closed, or its process ended).
"""
from __future__ import annotations

import json
import struct
import subprocess
import sys

import pyarrow as pa

LENGTH = struct.Struct("<I")


def _read_exactly(f, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise EOFError
    return data


def _send(f, status: int, payload: bytes) -> None:
    f.write(bytes([status]) + LENGTH.pack(len(payload)) + payload)
    f.flush()


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


def data_files(ds) -> list:
    """[fragment id, file name, base id] of every data file a dataset's fragments read."""
    return [[frag.fragment_id, f.path if isinstance(f.path, str) else f.path(), getattr(f, "base_id", None)]
            for frag in ds.get_fragments() for f in frag.data_files()]


def meta(ds) -> dict:
    """What a reader checks before reading: rows, columns and types, each fragment's data files."""
    return {"rows": ds.count_rows(), "schema": _ipc(ds.schema.empty_table()).hex(), "files": data_files(ds)}


def serve(path: str) -> None:
    import lance

    ds = lance.dataset(path)
    src, dst = sys.stdin.buffer, sys.stdout.buffer
    while True:
        try:
            request = json.loads(_read_exactly(src, LENGTH.unpack(_read_exactly(src, 4))[0]))
        except EOFError:
            return
        try:
            if request["op"] == "meta":
                _send(dst, 0, json.dumps(meta(ds)).encode())
            elif request["op"] == "take":
                _send(dst, 0, _ipc(ds.take(request["rows"], columns=request["columns"])))
            else:
                _send(dst, 0, _ipc(ds.to_table(columns=request["columns"])))
        except Exception as e:  # the reader raises it as the store's damage, in one line
            _send(dst, 1, f"{type(e).__name__}: {e}".encode())


class Remote:
    """A Lance dataset read through a server process: the calls a reader makes of one."""

    def __init__(self, path: str):
        self.proc = subprocess.Popen([sys.executable, "-m", __name__, path], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, close_fds=True)
        self._meta = self._ask({"op": "meta"}, json_reply=True)
        self.schema = pa.ipc.open_stream(bytes.fromhex(self._meta["schema"])).schema

    def _ask(self, request: dict, json_reply: bool = False):
        body = json.dumps(request).encode()
        try:
            self.proc.stdin.write(LENGTH.pack(len(body)) + body)
            self.proc.stdin.flush()
            status = _read_exactly(self.proc.stdout, 1)[0]
            payload = _read_exactly(self.proc.stdout, LENGTH.unpack(_read_exactly(self.proc.stdout, 4))[0])
        except (EOFError, BrokenPipeError) as e:
            raise OSError(f"Lance's read server ended (exit status {self.proc.poll()})") from e
        if status:
            raise OSError(payload.decode(errors="replace"))
        return json.loads(payload) if json_reply else pa.ipc.open_stream(payload).read_all()

    def count_rows(self) -> int:
        return int(self._meta["rows"])

    def data_files(self) -> list:
        return self._meta["files"]

    def take(self, rows, columns):
        return self._ask({"op": "take", "rows": [int(r) for r in rows], "columns": list(columns)})

    def to_table(self, columns):
        return self._ask({"op": "table", "columns": list(columns)})

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()  # the server ends on EOF
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc.stdout.close()


if __name__ == "__main__":
    serve(sys.argv[1])
