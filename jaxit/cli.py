"""The `jaxit` command: train, eval, demo.

    jaxit train --config=experiments/configs/finetune.py --workdir=runs/sst2 \
        [--config.task=sst2 --config.model=DIR_OR_HUB_ID ...] [--distributed]
    jaxit eval  --config=... --workdir=runs/sst2 [--checkpoint=best|latest]
    jaxit sweep --config=... --workdir=runs/sst2_berxit [--policies=confidence,entropy]
    jaxit demo  [--workdir=runs/demo]
    jaxit interpret [--config=...] --workdir=runs/sst2_dact [--examples=5] [--ig_steps=300]
    jaxit lr-eval --workdir=runs/sst2_adapler [--tasks=eraser_movies,hatexplain]  (AdapLeR
        CP scores vs human rationales; `jaxit lr-eval --help`)
"""

from __future__ import annotations

import json
import logging
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "ml_collections config file (e.g. experiments/configs/finetune.py[:tiny]); "
    "override fields with --config.<field>=<value>", lock_config=True)
flags.DEFINE_string("workdir", None, "run directory: checkpoints, metrics, results")
flags.DEFINE_integer("max_steps", 0, "train: stop after this many updates in this call "
                     "(checkpointed; rerun to resume); 0 = run to the end")
flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "eval: which checkpoint to load")
flags.DEFINE_bool("distributed", False, "call jax.distributed.initialize() (TPU pods, multi-host)")
flags.DEFINE_string("coordinator_address", None, "distributed: host:port of process 0 (CUDA)")
flags.DEFINE_integer("num_processes", None, "distributed: number of processes (CUDA)")
flags.DEFINE_integer("process_id", None, "distributed: this process's index (CUDA)")
flags.DEFINE_list("policies", ["confidence", "entropy", "patience"],
                  "sweep: exit policies to sweep (confidence, entropy, normalized_entropy, "
                  "patience, lte, elbert)")
flags.DEFINE_float("tolerance", 0.01, "sweep: operating point = largest FLOPs speed-up within "
                   "this score loss of the full model")
flags.DEFINE_integer("wallclock_examples", 200, "sweep: dev examples timed by the batch-1 runner")
flags.DEFINE_integer("batch_size", 32, "sweep: batch size of the batched engine's throughput "
                     "measurement on the whole dev split (0 = skip it)")
flags.DEFINE_bool("quick", False, "demo: a smaller, faster run (for smoke tests)")
flags.DEFINE_integer("examples", 5, "interpret: dev examples to attribute with Integrated "
                     "Gradients (heatmaps)")
flags.DEFINE_integer("ig_steps", 300, "interpret: Integrated Gradients steps (trapezoid rule; "
                     "summary.json flags examples whose completeness gap exceeds 5%)")

COMMANDS = ("train", "eval", "sweep", "demo", "interpret", "lr-eval")


def _usage() -> str:
    return (__doc__ or "") + "\nRun `jaxit <command> --help` for a command's flags.\n"


def _need(name: str, value):
    if value is None:
        raise app.UsageError(f"--{name} is required")
    return value


def _init_distributed():
    if FLAGS.distributed:
        import jax

        from jaxit.train.sharding import initialize_distributed

        initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
        print(f"jax.distributed: process {jax.process_index()} of {jax.process_count()}, "
              f"{jax.device_count()} devices in all", flush=True)


def _train(argv):
    del argv
    _init_distributed()
    from jaxit.train.loop import train

    config = _need("config", FLAGS.config)
    workdir = _need("workdir", FLAGS.workdir)
    result, _ = train(config, workdir, max_steps_this_run=FLAGS.max_steps or None)
    print(json.dumps(result, indent=2, default=float))


def _run_config():
    """--config, or (for commands on a trained run) the config saved in --workdir."""
    if FLAGS.config is not None:
        return FLAGS.config
    workdir = _need("workdir", FLAGS.workdir)
    from jaxit.configs import config_from_run

    return config_from_run(workdir)


def _eval(argv):
    del argv
    _init_distributed()
    from jaxit.train.evaluate import evaluate_checkpoint

    config = _run_config()
    workdir = _need("workdir", FLAGS.workdir)
    metrics = evaluate_checkpoint(config, workdir, which=FLAGS.checkpoint)
    print(json.dumps(metrics, indent=2, default=float))


def _sweep(argv):
    del argv
    from jaxit.sweep import sweep_checkpoint

    config = _run_config()
    workdir = _need("workdir", FLAGS.workdir)
    report = sweep_checkpoint(config, workdir, which=FLAGS.checkpoint, policies=FLAGS.policies,
                              tolerance=FLAGS.tolerance,
                              wallclock_examples=FLAGS.wallclock_examples,
                              batch_size=FLAGS.batch_size)
    print(json.dumps({"full_model_score": report["full_model_score"],
                      "layerwise": report["layerwise"],
                      "operating_points": report["operating_points"]}, indent=2, default=float))
    print(f"wrote {workdir}/sweep/exits.json and tradeoff.png")


def _demo(argv):
    del argv
    from jaxit.demo import run_demo

    run_demo(FLAGS.workdir or "runs/demo", quick=FLAGS.quick)


def _interpret(argv):
    del argv
    from jaxit.interpret.report import interpret_checkpoint

    config = _run_config()
    workdir = _need("workdir", FLAGS.workdir)
    summary = interpret_checkpoint(config, workdir, which=FLAGS.checkpoint,
                                   num_examples=FLAGS.examples, ig_steps=FLAGS.ig_steps)
    print(json.dumps(summary, indent=2, default=float))
    print(f"wrote {summary['out_dir']}/ (attributions.html, exit_histogram.png, "
          "attention_entropy.png, pruning.json, summary.json)")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv if argv is None else argv)
    if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
        print(_usage())
        sys.exit(0 if len(argv) >= 2 else 2)
    cmd = argv[1]
    if cmd not in COMMANDS:
        print(f"jaxit: unknown command {cmd!r}; commands: {', '.join(COMMANDS)}\n", file=sys.stderr)
        print(_usage(), file=sys.stderr)
        sys.exit(2)
    if cmd == "lr-eval":  # argparse flags of its own (jaxit.interpret.lr_eval)
        from jaxit.interpret.lr_eval import main as lr_eval_main

        lr_eval_main(argv[2:])
        return
    logging.basicConfig(level=logging.WARNING)
    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every save at INFO
    fn = {"train": _train, "eval": _eval, "sweep": _sweep, "demo": _demo,
          "interpret": _interpret}[cmd]
    app.run(fn, argv=[f"jaxit {cmd}"] + argv[2:])


if __name__ == "__main__":
    main()
