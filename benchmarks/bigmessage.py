"""Peak server memory while a very large message is retrieved (issue: bounded memory).

Creates a throw-away Maildir holding one message of SIZE MiB (LF line ends, so every
line is converted on the fly, and dot lines, so every chunk is stuffed), starts
``python -m trio_pop3 serve`` on loopback, retrieves the message with a raw socket
client that counts octets without keeping them, and reports the server's resident
memory before and its peak (VmHWM) after.  Linux only (reads /proc).

    python benchmarks/bigmessage.py [--size-mib 200]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: One line of the generated body: 76 octets plus LF, like base64 in a MIME part.
LINE = b"QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB\n"


def proc_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def make_message(path: Path, size: int) -> int:
    """Write a message of about ``size`` octets; return its wire size (CRLF)."""
    header = b"From: bench@example.org\nSubject: big\n\n"
    lines = 0
    with path.open("wb") as f:
        f.write(header)
        written = len(header)
        block = (LINE * 1023 + b".dot line\n") * 16
        while written < size:
            f.write(block)
            written += len(block)
            lines += block.count(b"\n")
    return written + header.count(b"\n") + lines


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def retrieve(port: int) -> tuple[int, float]:
    """Log in, RETR 1, count the octets up to the terminator; return (octets, seconds)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    reader = sock.makefile("rb", buffering=1 << 20)

    def command(line: bytes) -> bytes:
        sock.sendall(line + b"\r\n")
        return reader.readline()

    reader.readline()
    assert command(b"USER big").startswith(b"+OK")
    assert command(b"PASS pass").startswith(b"+OK")
    start = time.perf_counter()
    assert command(b"RETR 1").startswith(b"+OK")
    octets = 0
    for line in reader:
        if line == b".\r\n":
            break
        octets += len(line) - (1 if line.startswith(b"..") else 0)
    elapsed = time.perf_counter() - start
    command(b"QUIT")
    sock.close()
    return octets, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size-mib", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="trio-pop3-big-") as tmp:
        base = Path(tmp)
        for sub in ("cur", "new", "tmp"):
            (base / "mail" / "big" / sub).mkdir(parents=True)
        wire = make_message(base / "mail" / "big" / "cur" / "1.M1P1.bench:2,", args.size_mib << 20)
        (base / "passwd").write_text("big:{PLAIN}pass\n")
        port = free_port()
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        server = subprocess.Popen(
            [
                *(sys.executable, "-m", "trio_pop3", "serve", "--host", "127.0.0.1"),
                *("--port", str(port), "--maildir-root", str(base / "mail")),
                *("--users", str(base / "passwd")),
            ],
            env=env,
            stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(200):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.05)
            before = proc_kib(server.pid, "VmRSS")
            octets, seconds = retrieve(port)
            peak = proc_kib(server.pid, "VmHWM")
        finally:
            server.terminate()
            server.wait(timeout=30)
    assert octets == wire, (octets, wire)
    print(f"message: {wire / 2**20:.1f} MiB on the wire, retrieved intact in {seconds:.2f} s")
    print(f"server RSS before: {before / 1024:.1f} MiB; peak during RETR: {peak / 1024:.1f} MiB")
    print(f"peak growth: {(peak - before) / 1024:.1f} MiB ({(peak - before) / (wire / 1024):.3%})")


if __name__ == "__main__":
    main()
