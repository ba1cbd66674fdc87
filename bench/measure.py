"""Run one command; print its wall seconds, peak RSS and stdout as one JSON line.

os.wait4 returns the resource usage of that very child, so each benchmark side's
peak memory is its own, not the largest of everything run before it.
"""

import json
import os
import subprocess
import sys
import tempfile
import time


def main():
    command = sys.argv[sys.argv.index("--") + 1:]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.monotonic()
        process = subprocess.Popen(command, stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.monotonic() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if process.returncode != 0:
        sys.stderr.write(stderr[-4000:])
        sys.exit(f"{' '.join(command)} exited {process.returncode}")
    print(json.dumps({"seconds": seconds, "rss_mb": usage.ru_maxrss / 1024, "child_stdout": stdout}))


if __name__ == "__main__":
    main()
