"""Runs a command and writes its peak RSS (bytes) to a file: `python tests/peak_rss.py OUT CMD...`.

Why a small intermediate process: on Linux a child's ru_maxrss includes the resident size of the process image it
replaced at exec, i.e. its parent's at fork. Started straight from a pytest process that has grown to GBs, every
child would report at least that. Started from this small process, it reports its own peak.
"""

import os
import subprocess
import sys
from pathlib import Path

if __name__ == "__main__":
    out, cmd = Path(sys.argv[1]), sys.argv[2:]
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    out.write_text(str(usage.ru_maxrss * 1024))  # kilobytes on Linux
    sys.exit(os.waitstatus_to_exitcode(status))
