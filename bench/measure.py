"""Run one command; print its wall seconds, peak RSS and stdout as one JSON line.

os.wait4 returns the resource usage of that very child, so each benchmark side's
peak memory is its own, not the largest of everything run before it.  That peak
counts the pages of memory-mapped files the child has read (datasets' Arrow files)
as well as its private memory, so the child's RssAnon (private memory only) is
sampled too, ten times a second: `anon_mb` is the highest seen.
"""

import json
import os
import subprocess
import sys
import tempfile
import threading
import time


def private_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) / 1024
    except OSError:  # the child has exited
        pass
    return 0.0


def sample_private(pid: int, peak: list, done: threading.Event):
    while not done.wait(0.1):
        peak[0] = max(peak[0], private_mb(pid))


def main():
    command = sys.argv[sys.argv.index("--") + 1:]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.monotonic()
        process = subprocess.Popen(command, stdout=out, stderr=err)
        peak, done = [0.0], threading.Event()
        sampler = threading.Thread(target=sample_private, args=(process.pid, peak, done), daemon=True)
        sampler.start()
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.monotonic() - start
        done.set()
        sampler.join()
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if process.returncode != 0:
        sys.stderr.write(stderr[-4000:])
        sys.exit(f"{' '.join(command)} exited {process.returncode}")
    print(json.dumps({"seconds": seconds, "rss_mb": usage.ru_maxrss / 1024, "anon_mb": round(peak[0], 1),
                      "child_stdout": stdout}))


if __name__ == "__main__":
    main()
