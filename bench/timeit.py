#!/usr/bin/env python3
"""Time whole-process runs of several commands, interleaved; print JSON.

    bench/timeit.py [--runs N] [--warmup W] [--logdir DIR] [--json OUT] \\
        --label foil -- ./foil search ... \\
        --label bm25s -- python3 peer.py ...

A command is everything after `--label NAME --` up to the next
`--label X --` (or the end). Commands are run directly (no shell); wrap in
`bash -c '...'` if a shell is needed.

Each round runs every command once; the starting command rotates from round
to round (A B, B A, A B, ... for two), so drift and machine noise hit all
commands alike. W untimed warm-up rounds (default 1) come first, so every
command finds the page cache equally warm.

Per run it records the wall time (perf_counter from spawn to reap), and the
user and system CPU seconds from os.wait4 on that child (per-run figures,
unlike getrusage(RUSAGE_CHILDREN), which is cumulative; they include the
child's waited-for descendants). Peak RSS (--rss):
  time   run the command under GNU `/usr/bin/time -f %M -o FILE` and read its
         figure: the command's own peak (max over its waited-for children too).
  wait4  ru_maxrss from os.wait4. Linux carries the pre-exec address space's
         high-water mark across execve, and a forked/vforked child starts
         with this Python process's, so this figure is never below
         timeit.py's own RSS (~15 MB, reported as rss_floor_kb).
  auto   (default) `time` if /usr/bin/time is GNU time, else `wait4`.
The /usr/bin/time wrapper adds about a millisecond to each wall time.

stdout/stderr of the commands go to DIR/LABEL.N.{out,err} with --logdir
(N = 0.. for timed runs, w0.. for warm-ups), else to /dev/null. A non-zero
exit aborts with the tail of its stderr. The JSON result (stdout, and OUT if
--json) is {"runs", "warmup", "order", "commands": [{"label", "argv",
"wall_s": [...], "user_s", "sys_s", "peak_rss_kb", "median_wall_s",
"min_wall_s", "mean_wall_s", "median_peak_rss_mb", "median_cpu_util"}, ...],
"rss_source", "rss_floor_kb"};
median_cpu_util = (user + sys) / wall, i.e. the mean number of busy cores.
"""

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

USAGE = __doc__.split("\n\n")[1]


def parse(argv):
    opts = {"runs": 5, "warmup": 1, "logdir": None, "json": None, "rss": "auto"}
    cmds = []
    i = 0
    while i < len(argv) and argv[i] != "--label":
        a = argv[i]
        if a in ("-h", "--help"):
            print(__doc__)
            sys.exit(0)
        key = a.lstrip("-")
        if a.startswith("--") and "=" in key:
            key, val = key.split("=", 1)
            i += 1
        elif a.startswith("--") and i + 1 < len(argv):
            val = argv[i + 1]
            i += 2
        else:
            sys.exit(f"timeit.py: bad argument {a!r}\nusage:\n{USAGE}")
        if key not in opts:
            sys.exit(f"timeit.py: unknown option --{key}\nusage:\n{USAGE}")
        opts[key] = int(val) if key in ("runs", "warmup") else val

    def starts_cmd(j):
        return j + 2 < len(argv) and argv[j] == "--label" and argv[j + 2] == "--"

    while i < len(argv):
        if not starts_cmd(i):
            sys.exit(f"timeit.py: expected `--label NAME -- cmd...` at {argv[i:i + 3]!r}")
        label = argv[i + 1]
        j = i + 3
        while j < len(argv) and not starts_cmd(j):
            j += 1
        if j == i + 3:
            sys.exit(f"timeit.py: empty command for label {label!r}")
        cmds.append({"label": label, "argv": argv[i + 3:j]})
        i = j
    if not cmds:
        sys.exit(f"timeit.py: no commands\nusage:\n{USAGE}")
    labels = [c["label"] for c in cmds]
    if len(set(labels)) != len(labels):
        sys.exit(f"timeit.py: duplicate labels {labels}")
    if opts["rss"] not in ("auto", "time", "wait4"):
        sys.exit("timeit.py: --rss must be auto, time or wait4")
    if opts["runs"] < 1 or opts["warmup"] < 0:
        sys.exit("timeit.py: --runs must be >= 1 and --warmup >= 0")
    return opts, cmds


GNU_TIME = "/usr/bin/time"


def have_gnu_time():
    try:
        r = subprocess.run([GNU_TIME, "--version"], capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return b"GNU" in r.stdout + r.stderr


def run_once(cmd, logdir, tag, rss_file=None):
    argv = cmd["argv"]
    if rss_file:
        argv = [GNU_TIME, "-f", "%M", "-o", rss_file, "--"] + argv
    if logdir:
        out = open(os.path.join(logdir, f"{cmd['label']}.{tag}.out"), "wb")
        err = open(os.path.join(logdir, f"{cmd['label']}.{tag}.err"), "wb+")
    else:
        out = err = subprocess.DEVNULL
    try:
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)  # reaped here, tell Popen
        if p.returncode != 0:
            tail = ""
            if logdir:
                err.seek(0)
                tail = err.read()[-3000:].decode("utf-8", "replace")
            sys.exit(f"timeit.py: {cmd['label']} ({tag}) exited {p.returncode}: "
                     f"{' '.join(cmd['argv'])}\n{tail}")
    finally:
        if logdir:
            out.close()
            err.close()
    if rss_file:
        with open(rss_file) as f:  # "%M" is the last line (KiB)
            rss_kb = int([ln for ln in f.read().splitlines() if ln.strip()][-1])
    else:
        # ru_maxrss is in KiB on Linux (bytes on macOS).
        rss_kb = ru.ru_maxrss // 1024 if sys.platform == "darwin" else ru.ru_maxrss
    return {"wall_s": wall, "user_s": ru.ru_utime, "sys_s": ru.ru_stime, "peak_rss_kb": rss_kb}


def main():
    opts, cmds = parse(sys.argv[1:])
    if opts["logdir"]:
        os.makedirs(opts["logdir"], exist_ok=True)
    rss_source = opts["rss"]
    if rss_source == "auto":
        rss_source = "time" if have_gnu_time() else "wait4"
    elif rss_source == "time" and not have_gnu_time():
        sys.exit(f"timeit.py: --rss time needs GNU time at {GNU_TIME}")
    rss_file = None
    if rss_source == "time":
        fd, rss_file = tempfile.mkstemp(prefix="timeit.", suffix=".rss")
        os.close(fd)
    try:
        for c in cmds:
            for k in ("wall_s", "user_s", "sys_s", "peak_rss_kb"):
                c[k] = []
        order = []
        n = len(cmds)
        for w in range(opts["warmup"]):
            for c in cmds:
                print(f"timeit.py: warm-up {w + 1}/{opts['warmup']} {c['label']}", file=sys.stderr, flush=True)
                run_once(c, opts["logdir"], f"w{w}", rss_file)
        for r in range(opts["runs"]):
            for k in range(n):
                c = cmds[(r + k) % n]
                m = run_once(c, opts["logdir"], str(r), rss_file)
                for key, v in m.items():
                    c[key].append(v)
                order.append(c["label"])
                print(f"timeit.py: run {r + 1}/{opts['runs']} {c['label']}: {m['wall_s']:.3f}s "
                      f"cpu {m['user_s'] + m['sys_s']:.3f}s rss {m['peak_rss_kb'] / 1024:.1f}MB",
                      file=sys.stderr, flush=True)
        for c in cmds:
            c["median_wall_s"] = statistics.median(c["wall_s"])
            c["min_wall_s"] = min(c["wall_s"])
            c["mean_wall_s"] = statistics.fmean(c["wall_s"])
            c["median_peak_rss_mb"] = statistics.median(c["peak_rss_kb"]) / 1024
            c["median_cpu_util"] = statistics.median(
                (u + s) / w for u, s, w in zip(c["user_s"], c["sys_s"], c["wall_s"]))
    finally:
        if rss_file:
            os.unlink(rss_file)
    result = {"runs": opts["runs"], "warmup": opts["warmup"], "order": order,
              "rss_source": rss_source,
              "rss_floor_kb": 0 if rss_source == "time" else
              resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
              "commands": cmds}
    text = json.dumps(result, indent=2)
    if opts["json"]:
        with open(opts["json"], "w") as f:
            f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
