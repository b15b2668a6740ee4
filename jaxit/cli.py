"""The `jaxit` command: train, eval, demo.

    jaxit train --config=experiments/configs/finetune.py --workdir=runs/sst2 \
        [--config.task=sst2 --config.model=DIR_OR_HUB_ID ...] [--distributed]
    jaxit eval  --config=... --workdir=runs/sst2 [--checkpoint=best|latest]
    jaxit sweep --config=... --workdir=runs/sst2_berxit [--policies=confidence,entropy]
    jaxit demo  [--workdir=runs/demo]
    jaxit interpret [--config=...] --workdir=runs/sst2_dact [--examples=5] [--ig_steps=300]
        (DACT: Integrated Gradients, exits, attention entropy; ELBERT: its decision figures)
    jaxit lr-eval --workdir=runs/sst2_adapler [--tasks=eraser_movies,hatexplain]  (AdapLeR
        CP scores vs human rationales; `jaxit lr-eval --help`)
    jaxit predict --workdir=RUN --input=FILE|- [--output=FILE] [--checkpoint=best|latest|STEP]
        [--text_fields=a,b] [--policy=confidence --threshold=0.9] [--eta_scale=1.0]
    jaxit export --workdir=RUN --out=DIR   (a Hugging Face sequence-classification checkpoint)
    jaxit data --task=ag_news [--split=train] | --config=... [--config.task=custom ...] |
        --workdir=RUN   (counts, labels, token lengths, truncation, first rows)
"""

from __future__ import annotations

import json
import logging
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from jaxit.encoders.config import COMPUTE_DTYPES

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "ml_collections config file (e.g. experiments/configs/finetune.py[:tiny]); "
    "override fields with --config.<field>=<value>", lock_config=True)
flags.DEFINE_string("workdir", None, "run directory: checkpoints, metrics, results")
flags.DEFINE_integer("max_steps", 0, "train: stop after this many updates in this call "
                     "(checkpointed; rerun to resume); 0 = run to the end")
flags.DEFINE_string("checkpoint", "best", "which checkpoint to load: best or latest (predict and "
                    "export also take a step number)")
flags.DEFINE_bool("distributed", False, "call jax.distributed.initialize() (TPU pods, multi-host)")
flags.DEFINE_string("coordinator_address", None, "distributed: host:port of process 0 (CUDA)")
flags.DEFINE_integer("num_processes", None, "distributed: number of processes (CUDA)")
flags.DEFINE_integer("process_id", None, "distributed: this process's index (CUDA)")
flags.DEFINE_list("policies", ["confidence", "entropy", "patience"],
                  "sweep: exit policies to sweep (confidence, entropy, normalized_entropy, "
                  "patience, lte, elbert)")
flags.DEFINE_list("eta_scales", None, "sweep, depth + width runs: scales of the trained eta "
                  "for the 2-D sweep (default: jaxit.depth_width_sweep.DEFAULT_ETA_SCALES)")
flags.DEFINE_float("tolerance", 0.01, "sweep: operating point = largest FLOPs speed-up within "
                   "this score loss of the full model")
flags.DEFINE_integer("wallclock_examples", 200, "sweep: dev examples timed by the batch-1 runner")
flags.DEFINE_integer("batch_size", 32, "sweep: batch size of the batched engine's throughput "
                     "measurement on the whole dev split (0 = skip it); predict: rows per "
                     "dispatch")
flags.DEFINE_bool("quick", False, "demo: a smaller, faster run (for smoke tests)")
flags.DEFINE_integer("examples", 5, "interpret: dev examples to attribute with Integrated "
                     "Gradients (heatmaps)")
flags.DEFINE_integer("ig_steps", 300, "interpret: Integrated Gradients steps (trapezoid rule; "
                     "summary.json flags examples whose completeness gap exceeds 5%)")

flags.DEFINE_string("input", None, "predict: input file (.txt: one example per line, a pair's "
                    "texts tab-separated; .tsv/.csv with a header; .jsonl), or - for stdin")
flags.DEFINE_string("output", None, "predict: write the JSON lines here (default: stdout)")
flags.DEFINE_enum("format", None, ["text", "tsv", "csv", "jsonl"],
                  "predict: input format (default: from the extension; stdin: text)")
flags.DEFINE_list("text_fields", None, "predict: the column(s)/key(s) holding the text(s) "
                  "(tsv/csv/jsonl; default: the task's, e.g. sentence or sentence1,sentence2)")
flags.DEFINE_string("label_field", None, "predict: a column/key with gold labels: the summary "
                    "adds the task's metric")
flags.DEFINE_string("policy", None, "predict: exit rule (never, confidence, entropy, "
                    "normalized_entropy, patience, lte, elbert, dact, fixed); default: the "
                    "sweep's operating point (see jaxit.inference.predictor)")
flags.DEFINE_float("threshold", None, "predict: the policy's threshold (patience: layers, "
                   "fixed: the exit layer)")
flags.DEFINE_float("eta_scale", None, "predict: token dropping: multiply the trained eta by "
                   "this (0 = keep every token; default 1)")
flags.DEFINE_string("summary", None, "predict: also write the summary as JSON to this file")
flags.DEFINE_string("out", None, "export: the new directory to write")
flags.DEFINE_enum("dtype", None, list(COMPUTE_DTYPES),
                  "eval, sweep, predict, interpret: compute dtype (default: the run's "
                  "config.dtype; bfloat16 is meant for TPU/GPU)")
flags.DEFINE_bool("verbose", False, "print the traceback of a user error (bad flag, config, "
                  "file or data) instead of the one-line `jaxit <cmd>: error: ...`")
flags.DEFINE_string("task", None, "data: a registered task to summarise (without --config)")
flags.DEFINE_list("split", None, "data: the split(s) to summarise (default: the config's train "
                  "and eval splits, and a custom task's test split)")

COMMANDS = ("train", "eval", "sweep", "demo", "interpret", "lr-eval", "predict", "export",
            "data")


def _usage() -> str:
    return (__doc__ or "") + "\nRun `jaxit <command> --help` for a command's flags.\n"


def _need(name: str, value):
    if value is None:
        raise app.UsageError(f"--{name} is required")
    return value


def _best_or_latest() -> str:
    if FLAGS.checkpoint not in ("best", "latest"):
        raise app.UsageError(f"--checkpoint must be best or latest here, got {FLAGS.checkpoint!r}")
    return FLAGS.checkpoint


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

    workdir = _need("workdir", FLAGS.workdir)
    config = _run_config()  # without --config: resume with the run's saved config
    from jaxit.predict_cli import enable_compilation_cache

    enable_compilation_cache()  # a resumed run starts in seconds
    result, _ = train(config, workdir, max_steps_this_run=FLAGS.max_steps or None)
    print(json.dumps(result, indent=2, default=float))


def _run_config():
    """--config, or (for commands on a trained run) the config saved in --workdir."""
    if FLAGS.config is not None:
        config = FLAGS.config
    else:
        from jaxit.configs import config_from_run

        config = config_from_run(_need("workdir", FLAGS.workdir))
    if FLAGS.dtype:
        config.dtype = FLAGS.dtype
    return config


def _eval(argv):
    del argv
    _init_distributed()
    from jaxit.train.evaluate import evaluate_checkpoint

    config = _run_config()
    workdir = _need("workdir", FLAGS.workdir)
    metrics = evaluate_checkpoint(config, workdir, which=_best_or_latest())
    print(json.dumps(metrics, indent=2, default=float))


def _sweep(argv):
    del argv
    from jaxit.sweep import sweep_checkpoint

    config = _run_config()
    workdir = _need("workdir", FLAGS.workdir)
    report = sweep_checkpoint(config, workdir, which=_best_or_latest(), policies=FLAGS.policies,
                              tolerance=FLAGS.tolerance,
                              wallclock_examples=FLAGS.wallclock_examples,
                              batch_size=FLAGS.batch_size,
                              eta_scales=_floats("eta_scales", FLAGS.eta_scales))
    print(json.dumps({"full_model_score": report["full_model_score"],
                      "layerwise": report["layerwise"],
                      "operating_points": report["operating_points"]}, indent=2, default=float))
    from jaxit.interpret.report_page import write_sweep_page

    page = write_sweep_page(workdir, report)
    name = "depth_width.json" if "pareto" in report else "exits.json"
    print(f"wrote {workdir}/sweep/{name}, tradeoff.png and {page}")


def _floats(flag: str, values):
    """A list flag's values as floats (None when unset); a bad value is a user error."""
    if values is None:
        return None
    try:
        return [float(v) for v in values]
    except ValueError:
        from jaxit.errors import UserError

        raise UserError(f"--{flag}: expected numbers, got {','.join(values)}") from None


def _demo(argv):
    del argv
    from jaxit.demo import run_demo

    run_demo(FLAGS.workdir or "runs/demo", quick=FLAGS.quick)


def _interpret(argv):
    del argv
    from jaxit.interpret.report import interpret_checkpoint

    config = _run_config()
    workdir = _need("workdir", FLAGS.workdir)
    summary = interpret_checkpoint(config, workdir, which=_best_or_latest(),
                                   num_examples=FLAGS.examples, ig_steps=FLAGS.ig_steps)
    print(json.dumps(summary, indent=2, default=float))
    files = ("elbert.html, elbert_<i>.png, elbert.json" if "delta" in summary else
             "attributions.html, exit_histogram.png, attention_entropy.png, pruning.json")
    print(f"wrote {summary['out_dir']}/ ({files}, summary.json)")


def _user_errors():
    """The errors a user's input or run can cause (reported as one line, no traceback)."""
    from jaxit.data.example import DataFormatError
    from jaxit.data.text_inputs import InputError
    from jaxit.encoders.weights import CheckpointError
    from jaxit.errors import UserError
    from jaxit.inference.trained_run import RunError
    from jaxit.train.checkpoint import IncompatibleCheckpointError
    from jaxit.train.loop import DivergenceError

    return (InputError, RunError, CheckpointError, IncompatibleCheckpointError, DataFormatError,
            UserError, DivergenceError, FileNotFoundError, NotADirectoryError, app.UsageError)


def _fail(cmd: str, e: Exception):
    msg = " ".join(str(e).split()) or type(e).__name__  # one line
    print(f"jaxit {cmd}: error: {msg}", file=sys.stderr)
    sys.exit(2)


def _guarded(cmd: str, fn):
    """`fn` with user errors reported by `_fail` (tracebacks with --verbose); any other
    exception is an internal error and keeps its traceback."""

    def run(argv):
        try:
            fn(argv)
        except _user_errors() as e:
            if FLAGS.verbose:
                raise
            _fail(cmd, e)

    return run


def _flags_parser(cmd: str):
    """absl's flag parsing, with a bad flag, config file or `--config.<field>` override
    reported as one line (an unknown field with the closest valid name)."""

    def parse(argv):
        try:
            args = FLAGS(argv)
            if FLAGS.config is not None:
                FLAGS.config.keys()  # a config file that failed to load raises here
            return args
        except (flags.Error, AttributeError, KeyError, OSError, ValueError, TypeError) as e:
            if "--verbose" in argv:
                raise
            _fail(cmd, _flag_error(argv, e))

    return parse


def _flag_error(argv, e: Exception) -> Exception:
    from jaxit.train.validate import unknown_field_error, unknown_fields

    if isinstance(e, (AttributeError, KeyError)):
        paths = [a.split("=")[0][len("--config."):] for a in argv if a.startswith("--config.")]
        bad = unknown_fields(paths)
        if bad:
            return unknown_field_error(bad[0])
    if isinstance(e, OSError) or "Traceback (most recent call last)" in str(e):
        return ValueError(f"--config: {str(e).strip().splitlines()[-1].strip()}")  # the cause
    return e


def _predict(argv):
    del argv
    from jaxit.predict_cli import run_predict

    try:
        run_predict(workdir=_need("workdir", FLAGS.workdir), input_path=_need("input", FLAGS.input),
                    output=FLAGS.output, checkpoint=FLAGS.checkpoint, fmt=FLAGS.format,
                    text_fields=FLAGS.text_fields, label_field=FLAGS.label_field,
                    policy=FLAGS.policy, threshold=FLAGS.threshold, eta_scale=FLAGS.eta_scale,
                    batch_size=FLAGS.batch_size, summary_path=FLAGS.summary, dtype=FLAGS.dtype)
    except _user_errors() as e:
        if FLAGS.verbose:
            raise
        _fail("predict", e)


def _export(argv):
    del argv
    from jaxit.export import export_run
    from jaxit.inference.trained_run import load_trained_run

    try:
        run = load_trained_run(_need("workdir", FLAGS.workdir), FLAGS.checkpoint)
        out = export_run(run, _need("out", FLAGS.out))
    except _user_errors() as e:
        if FLAGS.verbose:
            raise
        _fail("export", e)
    trust = ", trust_remote_code=True" if run.pooling == "mean" else ""
    print(f"wrote {out}: AutoModelForSequenceClassification.from_pretrained({str(out)!r}{trust}); "
          f"jaxit predict --workdir={out} runs the adaptive model")


def _data(argv):
    del argv
    from jaxit.train.data_report import print_data_report

    if FLAGS.config is None and FLAGS.workdir is None:
        from jaxit.configs import base_config

        config = base_config()
        config.task = _need("task", FLAGS.task)
    else:
        config = _run_config()
        if FLAGS.task:
            config.task = FLAGS.task
    try:
        print_data_report(config, FLAGS.split)
    except (*_user_errors(), FileNotFoundError, ValueError) as e:  # unknown task/split too
        _fail("data", e)


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
          "interpret": _interpret, "predict": _predict, "export": _export,
          "data": _data}[cmd]
    app.run(_guarded(cmd, fn), argv=[f"jaxit {cmd}"] + argv[2:],
            flags_parser=_flags_parser(cmd))


if __name__ == "__main__":
    main()
