"""Where the main job's time goes: `invoke train --task=five-rare` from an empty cache, by phase.

Run: python benchmarks/main_job.py [--model resnet50] [--set epochs=10 ...] [--json]
It runs the same `commands.train` call as `invoke train --task=five-rare` (fresh cache dir:
the synthetic data is generated and built first; runs go to a temporary workdir), with timers
around the pipeline's phases, and prints one row per phase: wall seconds, CPU seconds (all
threads, plus the generator's worker processes) and calls. Phases are exclusive: a phase's
time excludes the phases and compilations inside it. Compilation is split by program (init,
train step, eval step, the model's graph) and by stage (trace, lower to MLIR, XLA compile),
read from JAX's own compile events. CPU seconds are the load-robust figure on a shared machine;
the load average before and after is printed with them.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import json
import os
import resource
import shutil
import sys
import tempfile
import threading
import time

from jaxfundus.host_memory import retain_freed_memory

retain_freed_memory()  # as tasks.py does, before jax starts its threads

COMPILE_STAGES = {"/jax/core/compile/jaxpr_trace_duration": "trace",
                  "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
                  "/jax/core/compile/backend_compile_duration": "XLA"}
# The program a compilation belongs to, named by the phase that triggered it.
PROGRAM_OF_PHASE = {"method + model graph": "model graph", "init state": "init",
                    "train steps": "train step", "validation": "eval step",
                    "test scoring": "test scoring (Grad-CAM)"}


def cpu_seconds() -> float:
    """CPU time of this process (all threads) and its finished child processes."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


class Phases:
    """Exclusive wall and CPU time per named phase; nested phases pause their parent."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = collections.defaultdict(float)
        self.cpu: dict[str, float] = collections.defaultdict(float)
        self.calls: collections.Counter = collections.Counter()
        self._stack: list[list] = []  # [name, wall at (re)start, cpu at (re)start]

    def push(self, name: str) -> None:
        now = (time.perf_counter(), cpu_seconds())
        if self._stack:
            self._charge(self._stack[-1], now)
        self._stack.append([name, *now])
        self.calls[name] += 1

    def pop(self) -> None:
        now = (time.perf_counter(), cpu_seconds())
        self._charge(self._stack.pop(), now)
        if self._stack:
            self._stack[-1][1:] = now

    def current(self) -> str | None:
        return self._stack[-1][0] if self._stack else None

    @contextlib.contextmanager
    def phase(self, name: str):
        self.push(name)
        try:
            yield
        finally:
            self.pop()

    def _charge(self, frame: list, now: tuple[float, float]) -> None:
        self.wall[frame[0]] += now[0] - frame[1]
        self.cpu[frame[0]] += now[1] - frame[2]
        frame[1:] = now


def wrap(owner, attribute: str, phases: Phases, name) -> None:
    """Time owner.attribute (a function or method) as phase `name` (or name(phases))."""
    original = getattr(owner, attribute)

    @functools.wraps(original)
    def timed(*args, **kwargs):
        with phases.phase(name(phases) if callable(name) else name):
            return original(*args, **kwargs)

    setattr(owner, attribute, timed)


def listen_to_compiles(phases: Phases) -> None:
    """Each trace / lowering / XLA compilation becomes a phase named after its program."""
    import jax

    main = threading.main_thread()

    def started(event: str, _value: float, **_kwargs) -> None:
        if event in COMPILE_STAGES and threading.current_thread() is main:
            program = PROGRAM_OF_PHASE.get(_owner(phases), "other")
            phases.push(f"compile {program}: {COMPILE_STAGES[event]}")

    def finished(event: str, _seconds: float, **_kwargs) -> None:
        if event in COMPILE_STAGES and threading.current_thread() is main:
            phases.pop()

    jax.monitoring.register_scalar_listener(started)
    jax.monitoring.register_event_duration_secs_listener(finished)


def _owner(phases: Phases) -> str | None:
    """The innermost phase that is not a compilation (nested jits compile inside one)."""
    for frame in reversed(phases._stack):
        if not frame[0].startswith("compile "):
            return frame[0]
    return None


def instrument(phases: Phases, steps: collections.Counter) -> None:
    """Timers around the phases of data preparation, fold training and scoring."""
    import jaxfundus.synthetic
    from jaxfundus import experiment
    from jaxfundus.data import datasets
    from jaxfundus.train import loop

    wrap(jaxfundus.synthetic, "generate", phases, "generate synthetic data")
    wrap(datasets, "build_dataset", phases, "build TFDS dataset")
    wrap(datasets, "load_dataset", phases, "open dataset + index")
    wrap(experiment, "plan_folds", phases, "plan folds")
    wrap(experiment, "_trainer", phases, "method + model graph")
    wrap(experiment, "score_fold", phases, "test scoring")
    wrap(loop.Trainer, "init_state", phases, "init state")
    wrap(loop.Trainer, "_run_epoch", phases, "train steps")
    wrap(loop.Trainer, "predict", phases,
         lambda p: "test scoring" if _owner(p) == "test scoring" else "validation")
    for method in ("save", "wait", "close"):
        wrap(loop.RunCheckpoints, method, phases, "checkpoint save")
    wrap(loop.RunCheckpoints, "restore", phases, "checkpoint restore")
    wrap(loop, "write_history", phases, "history.csv + TensorBoard")
    wrap(loop._TensorBoard, "add", phases, "history.csv + TensorBoard")

    original_init = loop.Trainer.__init__

    def counting_init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        step = self.train_step

        def counted(*step_args):
            steps["train"] += 1
            return step(*step_args)

        counted.lower = step.lower  # benchmarks compile through it
        self.train_step = counted

    loop.Trainer.__init__ = counting_init


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", default="five-rare")
    parser.add_argument("--model", default=None)
    parser.add_argument("--set", action="append", default=[], dest="settings",
                        help="KEY=VALUE run option, as invoke train --set")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = parser.parse_args()
    cache = tempfile.mkdtemp(prefix="jaxfundus-cache-")
    workdir = tempfile.mkdtemp(prefix="jaxfundus-runs-")
    os.environ["XDG_CACHE_HOME"] = cache  # an empty cache: generate, build and compile afresh
    load_before = os.getloadavg()
    start_wall, start_cpu = time.perf_counter(), cpu_seconds()
    phases, steps = Phases(), collections.Counter()
    with phases.phase("imports"):
        from jaxfundus import commands
        from jaxfundus.config import parse_settings

        instrument(phases, steps)
        listen_to_compiles(phases)

    def log(line: str) -> None:
        print(f"{time.perf_counter() - start_wall:7.1f}s {line}", flush=True)

    with phases.phase("other (config, splits, logging, results)"):
        summaries = commands.train(task=args.task, model=args.model, workdir=workdir, log=log,
                                   **parse_settings(args.settings))
    total_wall, total_cpu = time.perf_counter() - start_wall, cpu_seconds() - start_cpu
    shutil.rmtree(cache)
    report = {"task": args.task, "model": summaries[0]["model"],
              "balanced_accuracy": summaries[0]["metrics"].get("balanced_accuracy"),
              "train_steps": steps["train"], "wall_s": total_wall, "cpu_s": total_cpu,
              "load_before": load_before, "load_after": os.getloadavg(),
              "phases": {name: {"wall_s": phases.wall[name], "cpu_s": phases.cpu[name],
                                "calls": phases.calls[name]} for name in phases.wall},
              "workdir": workdir}
    print(format_table(report))
    if args.json:
        print(json.dumps(report))


def format_table(report: dict) -> str:
    rows = sorted(report["phases"].items(), key=lambda item: -item[1]["wall_s"])
    lines = [f"{report['task']} / {report['model']}: {report['train_steps']} train steps; "
             f"balanced accuracy {report['balanced_accuracy']}",
             f"{'phase':44} {'wall s':>8} {'CPU s':>8} {'calls':>6}"]
    lines += [f"{name:44} {v['wall_s']:8.1f} {v['cpu_s']:8.1f} {v['calls']:6d}"
              for name, v in rows]
    lines.append(f"{'total':44} {report['wall_s']:8.1f} {report['cpu_s']:8.1f}")
    lines.append("load average (1/5/15 min) before {:.2f} {:.2f} {:.2f}, after {:.2f} {:.2f} "
                 "{:.2f}".format(*report["load_before"], *report["load_after"]))
    lines.append(f"runs (history.csv per fold): {report['workdir']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
