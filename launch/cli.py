"""`twoworlds` command line.

    twoworlds run [FILE.yaml] [key=value ...]   one run; world=both runs the Real/Ideal pair
    twoworlds sweep FILE|NAME [key=value ...]   a study on Ray Tune (--dry-run, --resume, --address, --smoke)
    twoworlds report runs/<study>               tables, plots and report.md/index.html of a study
    twoworlds demo [--smoke]                    the quick-start study and its report (what `make demo` runs)
    twoworlds keys                              every config key with its default
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path

from twoworlds.launch.logs import show_library_logs
from twoworlds.launch.recorder import ARGV_ENV

from twoworlds.errors import UserError

DEMO_SWEEP = "quickstart"  # a shipped study (sweeps/quickstart.yaml, package data in a wheel)


def main(argv: list[str] | None = None) -> int:
    """The command line; `argv` defaults to sys.argv[1:]."""
    # What provenance records for every trial of this command (a trial's own argv is a Ray worker's); an outer
    # twoworlds process that set it already wins, and an in-process call leaves the environment as it found it.
    outer = os.environ.get(ARGV_ENV)
    if outer is None:
        os.environ[ARGV_ENV] = " ".join(["twoworlds", *(sys.argv[1:] if argv is None else argv)])
    previous = _stop_on_sigterm()
    _quiet_event_writer_errors()
    try:
        return _main(argv)
    finally:
        if outer is None:
            os.environ.pop(ARGV_ENV, None)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
            _SIGTERM_HANDLED.clear()


class Terminated(KeyboardInterrupt):
    """SIGTERM: what SLURM, Kubernetes and Ray's autoscaler send before they stop a job. Handled like Ctrl-C
    (the run records 'interrupted' and keeps its rows; a sweep keeps its trials' checkpoints for --resume),
    then exit code 143 (128 + SIGTERM), as a shell reports a process SIGTERM ended."""


def _stop_on_sigterm():
    """Turn SIGTERM into `Terminated` in this (main) thread; the handler it replaces, or None when it leaves the
    signal alone (not the main thread; an inherited SIG_IGN, as under nohup, is kept)."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is signal.SIG_IGN:
        return None

    def terminate(signum, frame):
        _TERMINATED.set()
        if _SWEEPING.is_set():  # Tune stops its trials gracefully on SIGINT; the sweep then ends as after Ctrl-C
            signal.raise_signal(signal.SIGINT)
        else:
            raise Terminated

    _TERMINATED.clear()
    _SIGTERM_HANDLED.set()
    return signal.signal(signal.SIGTERM, terminate)


def _quiet_event_writer_errors() -> None:
    """TensorBoard's events writer thread prints its own traceback when a write fails (a full disk), before the
    main thread reports the same failure in one line (recorder.WriteError): keep the one line."""
    if getattr(threading.excepthook, "twoworlds", False):
        return
    previous = threading.excepthook

    def hook(args) -> None:
        if not (isinstance(args.exc_value, OSError) and type(args.thread).__name__ == "_AsyncWriterThread"):
            previous(args)

    hook.twoworlds = True
    threading.excepthook = hook


_TERMINATED, _SWEEPING, _SIGTERM_HANDLED = threading.Event(), threading.Event(), threading.Event()


def _main(argv: list[str] | None) -> int:
    show_library_logs()
    parser = argparse.ArgumentParser(prog="twoworlds", description="Deep Bootstrap scaling studies: Real vs Ideal World.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="train one run (world=real|ideal) or the pair (world=both)")
    p_run.add_argument("args", nargs="*", help="an optional YAML file, then key=value overrides")
    p_sweep = sub.add_parser("sweep", help="run a study (a sweep file) on Ray Tune")
    p_sweep.add_argument("file", help="a sweep file, e.g. sweeps/quickstart.yaml, or a shipped study's name")
    p_sweep.add_argument("args", nargs="*", help="key=value overrides applied to every trial")
    p_sweep.add_argument("--dry-run", action="store_true", help="print the trial table and exit")
    p_sweep.add_argument("--resume", action="store_true", help="continue an interrupted sweep")
    p_sweep.add_argument("--smoke", action="store_true", help="the file's tiny smoke variant")
    p_sweep.add_argument("--address", default=None, help="join a running Ray cluster (default: RAY_ADDRESS, "
                         "else start a local instance)")
    p_sweep.add_argument("--num-cpus", type=int, default=None, help="logical CPUs of a local Ray instance")
    p_sweep.add_argument("--report", action="store_true", help="write the study report when the sweep ends")
    p_report = sub.add_parser("report", help="tables, plots and the report of a study: runs/<study>/report/")
    p_report.add_argument("study", help="a study directory, e.g. runs/quickstart")
    p_report.add_argument("--target", type=float, default=None, help="Ideal World test soft error whose first "
                          "crossing measures optimization speed (default: the worst configuration's final error)")
    p_report.add_argument("--check", action="store_true", help="exit 1 when a claim of the study's sweep "
                          "file does not hold on this run (a study as a regression test of the science)")
    p_report.add_argument("--claims", default=None, metavar="FILE", help="check the claims of this sweep file "
                          "(or shipped study name) as written now, instead of those stored with the run: a claim "
                          "restated after the run (the report says so)")
    p_report.add_argument("--x", choices=("steps", "samples", "flops", "time"), default="steps",
                          help="x-axis of plots (a) and (d): optimizer steps, training samples, training FLOPs or "
                          "wall time (default: steps)")
    p_report.add_argument("--budget", "--speed-step", dest="budget", type=float, default=None,
                          help="plot (d)'s budget in the --x unit: a step, samples, FLOPs or seconds (default: "
                          "where the Real Worlds converge, median)")
    p_demo = sub.add_parser("demo", help="the quick-start study on MNIST-1D, ending in its report")
    p_demo.add_argument("args", nargs="*", help="key=value overrides")
    p_demo.add_argument("--smoke", action="store_true", help="its tiny smoke variant (a check that all works)")
    sub.add_parser("keys", help="list every config key with its default")
    ns, extra = parser.parse_known_args(argv)  # key=value overrides may follow --flags
    unknown = [a for a in extra if a.startswith("-")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extra and not hasattr(ns, "args"):
        parser.error(f"'{ns.command}' takes no arguments: {' '.join(extra)}")
    ns.args = getattr(ns, "args", []) + extra
    try:
        if ns.command == "keys":
            return _keys()
        if ns.command == "demo":
            from twoworlds.launch.sweep_spec import shipped_sweeps
            return _sweep(str(shipped_sweeps()[DEMO_SWEEP]), ns.args, smoke=ns.smoke, report=True)
        if ns.command == "sweep":
            return _sweep(ns.file, ns.args, dry_run=ns.dry_run, resume=ns.resume, smoke=ns.smoke,
                          address=ns.address, num_cpus=ns.num_cpus, report=ns.report)
        if ns.command == "report":
            return _report(ns.study, ns.target, ns.budget, ns.check, ns.x, ns.claims)
        path, overrides = _split_args(ns.args)
        return _run(path, overrides)
    except KeyboardInterrupt:  # a sweep says how to resume itself (see _sweep)
        what = "terminated (SIGTERM)" if _TERMINATED.is_set() else "interrupted"
        print(f"\n{what}: summary.json says 'interrupted' and the rows logged so far are kept in metrics.csv; "
              "a single run keeps no checkpoint, so running the same command again starts it from step 0",
              file=sys.stderr)
        return 143 if _TERMINATED.is_set() else 130
    except UserError as e:  # raised on purpose, phrased for the user; anything else is a bug: its traceback, exit 1
        print(f"error: {e}", file=sys.stderr)
        return 2


def _split_args(args: list[str]) -> tuple[str | None, list[str]]:
    if args and "=" not in args[0]:
        return args[0], args[1:]
    return None, args


def _keys() -> int:
    from omegaconf import OmegaConf
    from twoworlds.launch.config import all_keys, schema
    cfg = schema()
    for key in all_keys(cfg):
        value = OmegaConf.select(cfg, key)
        if not OmegaConf.is_dict(value):
            print(f"{key} = {value}")
    return 0


def _run(path: str | None, overrides: list[str]) -> int:
    from twoworlds.launch import config
    cfg = config.load(path, overrides)  # validate before the slow imports
    from twoworlds.launch.run import comparison_table, run_pair, run_trial
    if cfg.world == "both":
        real, ideal = run_pair(cfg)
        print()
        print(comparison_table(real, ideal))
        print(f"\noutputs: {Path(cfg.out_dir) / cfg.study}/  (tensorboard --logdir {Path(cfg.out_dir) / cfg.study})")
        return 0
    summary = run_trial(cfg)
    summary.pop("rows", None)
    print(json.dumps(summary, indent=2))
    return 0


def _sweep(path: str, overrides: list[str], *, dry_run=False, resume=False, smoke=False, address=None,
           num_cpus=None, report=False) -> int:
    from twoworlds.launch import trial_state
    from twoworlds.launch.sweep_spec import load_sweep, resume_overrides
    sweep = load_sweep(path, overrides, smoke=smoke)  # every key checked before Ray starts
    if dry_run:
        print(sweep.table())
        return 0
    if resume:  # the trials continue as they were started: the stored overrides, never new ones
        overrides = resume_overrides(sweep, overrides, smoke)
        sweep = load_sweep(path, overrides, smoke=smoke)
    # every trial directory there is, before Ray starts (a trial without one has nothing to conflict with)
    trial_state.refuse_conflicts([t.cfg for t in sweep.trials if t.run_dir.is_dir()])
    from twoworlds.launch.ray_start import connect
    from twoworlds.results.summary import collect, format_summary
    local = connect(sweep, address, num_cpus)  # no cluster, or trials no node can hold: one line, nothing written
    if _SIGTERM_HANDLED.is_set():  # ray.init put its own SIGTERM handler (sys.exit) in place of ours
        _stop_on_sigterm()
    from twoworlds.launch.sweep import run_sweep  # imports Ray: after connect set what Ray reads at import
    print(f"[sweep {sweep.name}] {len(sweep.trials)} trials; outputs in {sweep.study_dir}", flush=True)
    if not resume:
        sweep.write_manifest(overrides, smoke)
    interrupted = False
    _SWEEPING.set()
    try:
        run_sweep(sweep, resume=resume, local=local)
    except KeyboardInterrupt:
        interrupted = True
    finally:  # an interrupted sweep still prints the summary of the rows already written
        _SWEEPING.clear()
        trials = collect(sweep.study_dir, [t.name for t in sweep.trials])
        print()
        print(format_summary(sweep.name, trials))
        print(f"\noutputs: {sweep.study_dir}/  (tensorboard --logdir {sweep.study_dir}; "
              f"twoworlds report {sweep.study_dir})")
    if interrupted:
        again = " ".join(["twoworlds sweep", path, *overrides, *(["--smoke"] if smoke else []), "--resume"])
        what = "terminated (SIGTERM)" if _TERMINATED.is_set() else "interrupted"
        print(f"{what}: finished trials, the rows logged so far and the trials' checkpoints are kept; continue "
              f"with: {again}", file=sys.stderr)
        return 143 if _TERMINATED.is_set() else 130
    if report:
        _report(str(sweep.study_dir))
    bad = [t for t in trials if t.get("status") not in ("completed", "diverged")]
    return 1 if bad else 0


def _report(study_dir: str, target: float | None = None, budget: float | None = None, check: bool = False,
            x: str = "steps", claims_from: str | None = None) -> int:
    from twoworlds.results.report import build_report
    print(f"[report] reading {study_dir}" + (f"; claims as written now in {claims_from}" if claims_from else ""),
          flush=True)
    report = build_report(study_dir, target=target, budget=budget, x=x, claims_from=claims_from)
    for v in report.verdicts:
        print(f"[claim] {v.check_line()}", flush=True)  # verdict, evidence, margin and seed spread
    print(f"[report] written: {report.index}  (and report.md, PNGs, tables beside it)", flush=True)
    if check and report.failed:
        print(f"[check] {len(report.failed)} of {len(report.verdicts)} claims did not hold (or could not be "
              "checked); see above", file=sys.stderr)
        return 1
    if check:
        print(f"[check] all {len(report.verdicts)} claims hold" if report.verdicts else
              "[check] this study's sweep file lists no claims", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
