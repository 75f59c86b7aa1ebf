"""How long `talkface generate` takes from a fresh interpreter to its first frame and to the finished mp4.

Two kinds of fresh process, each run `--repeat` times:
- the command itself, `python -m talkface generate --out X --overwrite --quiet` on the bundled example
  face and speech: its wall time, as a user sees it;
- the same command run through `talkface.cli.main` in a process that marks the time of each stage
  (interpreter start, imports, model load, face detection, first frame written, mp4 complete) by
  wrapping the functions the command calls; the wrapped run does exactly the same work.

Run:
    PYTHONPATH=src python benchmarks/cold_start.py [--repeat 3] [--threads 1]
Prints a table of medians (min-max) in seconds and one JSON line. No timing is asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

# Runs in the fresh process: prints {"stage": seconds since the epoch, ...} as its last stdout line.
STAGES = r"""
import json, sys, time
marks = [("interpreter", time.time())]
def mark(name):
    marks.append((name, time.time()))

import importlib
import talkface.cli
mark("import talkface.cli")
# the imports as the command makes them (talkface.cli.load_heavy pauses the garbage collector)
load = getattr(talkface.cli, "load_heavy", lambda *names: [importlib.import_module(n) for n in names])
load("torch")
mark("import torch")
load("talkface.pipeline")
mark("import pipeline (cv2, av, networks)")
load("mediapipe")
mark("import mediapipe")
import talkface.pipeline as pipeline

def wrap(owner, name, label, first_only=False):
    fn = getattr(owner, name, None)
    if fn is None:
        return
    done = []
    def wrapped(*a, **k):
        out = fn(*a, **k)
        if not (first_only and done):
            mark(label)
            done.append(1)
        return out
    setattr(owner, name, wrapped)

from talkface.media import video
wrap(pipeline.Animator, "__init__", "model load")
wrap(pipeline, "scan_audio", "photo read, audio decoded and checked")
wrap(pipeline, "detect_faces", "face detection")
wrap(video.VideoWriter, "write", "first frame (MFCC, generator, paste-back, encode)", first_only=True)
wrap(video.VideoWriter, "close", "all frames, mp4 complete")
code = talkface.cli.main(sys.argv[1:])
mark("main returned")
print(json.dumps({"code": code, "marks": marks}))
"""


def command(out: str) -> list[str]:
    return ["generate", "--out", out, "--overwrite", "--quiet"]


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_cli(python: str, out: str, env: dict) -> tuple[float, float, int, list[str]]:
    """Wall seconds, CPU seconds (all threads), exit code and stderr lines of the command."""
    t, cpu = time.time(), children_cpu()
    p = subprocess.run([python, "-m", "talkface", *command(out)], env=env, capture_output=True, text=True)
    return time.time() - t, children_cpu() - cpu, p.returncode, p.stderr.splitlines()


def run_stages(python: str, out: str, env: dict) -> list[tuple[str, float]]:
    """(stage, seconds it took) in order; the first is the interpreter's own start-up."""
    t = time.time()
    p = subprocess.run([python, "-c", STAGES, *command(out)], env=env, capture_output=True, text=True)
    if p.returncode:
        raise SystemExit(f"the staged run failed:\n{p.stderr}")
    marks = json.loads(p.stdout.strip().splitlines()[-1])["marks"]
    end = time.time()
    times, last = [], t
    for name, when in marks:
        times.append((name, when - last))
        last = when
    times.append(("interpreter shutdown", end - last))
    times.append(("total", end - t))
    return times


def one_line(python: str, code: str, env: dict) -> float:
    t = time.time()
    subprocess.run([python, "-c", code], env=env, check=True, capture_output=True)
    return time.time() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeat", type=int, default=3, help="fresh processes of each kind")
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--threads", type=int, default=None,
                   help="OMP_NUM_THREADS for the commands (default: torch's own choice); 1 gives steadier figures on a busy machine")
    args = p.parse_args()
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
    env["PYTHONPATH"] = os.path.abspath(src) + os.pathsep + env.get("PYTHONPATH", "")

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "cold.mp4")
        walls, cpus, stderr_lines, stages = [], [], [], {}
        light = {"python -c pass": [], "import talkface.cli": [], "talkface --version": []}
        for _ in range(args.repeat):
            wall, cpu, code, err = run_cli(args.python, out, env)
            if code:
                raise SystemExit("the command failed:\n" + "\n".join(err))
            walls.append(wall)
            cpus.append(cpu)
            stderr_lines.append(len(err))
            for name, seconds in run_stages(args.python, out, env):
                stages.setdefault(name, []).append(seconds)
            light["python -c pass"].append(one_line(args.python, "pass", env))
            light["import talkface.cli"].append(one_line(args.python, "import talkface.cli", env))
            light["talkface --version"].append(one_line(args.python, "import sys; from talkface.cli import main; sys.argv[0] = 'talkface'\ntry:\n    main(['--version'])\nexcept SystemExit:\n    pass", env))

    def fmt(xs: list[float]) -> str:
        return f"{statistics.median(xs):6.2f}  ({min(xs):.2f}-{max(xs):.2f})"

    print(f"fresh processes, {args.repeat} of each kind; seconds, median (min-max)")
    print(f"{'python -m talkface generate --quiet: wall':54s}{fmt(walls)}   stderr lines: {max(stderr_lines)}")
    print(f"{'  CPU time (user + system, all threads)':54s}{fmt(cpus)}")
    print("stages of the same command, in one instrumented process:")
    for name, xs in stages.items():
        print(f"  {name:52s}{fmt(xs)}")
    for name, xs in light.items():
        print(f"{name:54s}{fmt(xs)}")
    summary = {"wall": round(statistics.median(walls), 3), "cpu": round(statistics.median(cpus), 3), "stderr_lines": max(stderr_lines)}
    summary.update({name: round(statistics.median(xs), 3) for name, xs in stages.items()})
    summary.update({name: round(statistics.median(xs), 3) for name, xs in light.items()})
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
