"""tpu_scripts/: dry runs print the expected commands, bad input fails with a clear message, and
the printed commands really work when the remote side is simulated.

No real gcloud/ssh/scp is ever run: every test puts fakes first on PATH. The `guard` fakes fail
and leave a marker when called (dry runs and argument errors must call nothing); the `sim` fakes
play the remote side: gcloud/ssh run the remote command with bash in a temporary home directory
per TPU worker or host, scp copies there, and a fake `jaxit` in the venv records its arguments.
"""

import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "tpu_scripts"
CONFIG = "experiments/configs/finetune.py"
TPU = ["--name=jaxit-test", "--zone=us-central2-b"]
ALL_SCRIPTS = ["create_tpu.sh", "setup_tpu.sh", "run_tpu.sh", "delete_tpu.sh", "run_cuda.sh"]
GUARDED = ["gcloud", "ssh", "scp", "python3", "pip", "uv", "curl", "tmux", "jaxit"]


def _write_exe(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def _sh(script, *args, bindir, cwd=ROOT, env=None, check=None):
    e = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}", **(env or {}))
    p = subprocess.run(
        ["bash", str(SCRIPTS / script), *args],
        cwd=cwd,
        env=e,
        capture_output=True,
        text=True,
        timeout=300,  # a hang guard, not a speed check: the real-jaxit calls import JAX twice
        check=False,
    )
    if check is not None:
        assert p.returncode == check, (p.returncode, p.stdout, p.stderr)
    return p


@pytest.fixture
def guard(tmp_path):
    """A bin dir whose gcloud/ssh/scp/... record that they were called and fail."""
    bindir, marker = tmp_path / "guard", tmp_path / "CALLED"
    bindir.mkdir()
    for tool in GUARDED:
        _write_exe(
            bindir / tool, f'#!/bin/bash\necho "{tool} $*" >> {shlex.quote(str(marker))}\nexit 99\n'
        )

    def call(script, *args, **kw):
        p = _sh(script, *args, bindir=bindir, **kw)
        assert not marker.exists(), f"dry run called: {marker.read_text()}"
        return p

    return call


def dry(guard, script, *args):
    """The commands a dry run prints, each split back into its argv."""
    args = list(args)
    args.insert(args.index("--") if "--" in args else len(args), "--dry-run")  # not after --
    p = guard(script, *args, check=0)
    return [shlex.split(line) for line in p.stdout.splitlines()]


def remote(argv):
    """The --command=... of a gcloud ssh argv, split into the words the remote shell sees."""
    (cmd,) = [a.removeprefix("--command=") for a in argv if a.startswith("--command=")]
    return shlex.split(cmd)


# --- syntax, shellcheck, --help --------------------------------------------------------------


@pytest.mark.parametrize("script", ALL_SCRIPTS + ["common.sh"])
def test_bash_syntax(script):
    p = subprocess.run(
        ["bash", "-n", str(SCRIPTS / script)], capture_output=True, text=True, check=False
    )
    assert p.returncode == 0, p.stderr


def test_shellcheck():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed (apt-get install -y shellcheck)")
    p = subprocess.run(
        ["shellcheck", "-x", *(str(SCRIPTS / s) for s in ALL_SCRIPTS)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert p.returncode == 0, p.stdout + p.stderr


def test_scripts_are_executable():
    for s in ALL_SCRIPTS:
        assert os.access(SCRIPTS / s, os.X_OK), s


@pytest.mark.parametrize("script", ALL_SCRIPTS)
def test_help(guard, script):
    for flag in ("--help", "-h"):
        p = guard(script, flag, check=0)
        assert "Usage:" in p.stdout and script in p.stdout and "--dry-run" in p.stdout
        assert "set -euo" not in p.stdout and p.stderr == ""


def test_help_after_subcommand(guard):
    assert "Usage:" in guard("run_cuda.sh", "train", "--help", check=0).stdout


# --- dry runs print the expected commands ------------------------------------------------------


def test_create_dry_run(guard):
    p = guard(
        "create_tpu.sh",
        *TPU,
        "--accelerator-type=v4-32",
        "--project=my-proj-1",
        "--spot",
        "--dry-run",
        "--",
        "--labels=team=nlp",
        "--description=my tpu",
        check=0,
    )
    assert p.stdout == (
        "gcloud compute tpus tpu-vm create jaxit-test --zone=us-central2-b "
        "--project=my-proj-1 --accelerator-type=v4-32 --version=tpu-ubuntu2204-base "
        "--spot --labels=team=nlp --description='my tpu'\n"
    )


@pytest.mark.parametrize(
    "accel,version",
    [
        ("v4-8", "tpu-ubuntu2204-base"),
        ("v3-8", "tpu-ubuntu2204-base"),
        ("v5litepod-8", "v2-alpha-tpuv5-lite"),
        ("v5p-8", "v2-alpha-tpuv5"),
        ("v6e-8", "v2-alpha-tpuv6e"),
    ],
)
def test_create_default_runtime(guard, accel, version):
    (argv,) = dry(guard, "create_tpu.sh", *TPU, f"--accelerator-type={accel}")
    assert argv[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "jaxit-test"]
    assert f"--version={version}" in argv and "--spot" not in argv and "--preemptible" not in argv


def test_create_explicit_runtime_and_preemptible(guard):
    (argv,) = dry(
        guard,
        "create_tpu.sh",
        *TPU,
        "--accelerator-type=v4-8",
        "--version=v2-alpha",
        "--preemptible",
    )
    assert argv[-2:] == ["--version=v2-alpha", "--preemptible"]


def test_delete_dry_run(guard):
    p = guard("delete_tpu.sh", *TPU, "--yes", "--dry-run", check=0)
    assert p.stdout == "gcloud compute tpus tpu-vm delete jaxit-test --zone=us-central2-b --quiet\n"


def test_setup_git_dry_run(guard):
    (argv,) = dry(
        guard,
        "setup_tpu.sh",
        *TPU,
        "--git=https://github.com/org/jaxit.git",
        "--ref=v0.1",
        "--extras=data",
        "--pip=gcsfs",
    )
    assert argv[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "jaxit-test"]
    assert "--worker=all" in argv and "--zone=us-central2-b" in argv
    words = remote(argv)
    i = words.index("install")
    assert words[i - 2 : i + 9] == [
        "uv",
        "pip",
        "install",
        "--reinstall-package",
        "jaxit",
        "--python",
        "jaxit-venv/bin/python",
        "jax[tpu]",
        "jaxit[data] @ git+https://github.com/org/jaxit.git@v0.1",
        "gcsfs",
        "&&",
    ]


def test_setup_wheel_dry_run(guard, tmp_path):
    wheel = tmp_path / "jaxit-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"")
    scp, ssh = dry(guard, "setup_tpu.sh", *TPU, f"--wheel={wheel}", "--worker=0,2")
    assert scp == [
        "gcloud",
        "compute",
        "tpus",
        "tpu-vm",
        "scp",
        str(wheel),
        "jaxit-test:jaxit-0.1.0-py3-none-any.whl",
        "--zone=us-central2-b",
        "--worker=0,2",
    ]
    assert ssh[4] == "ssh" and "--worker=0,2" in ssh
    assert "./jaxit-0.1.0-py3-none-any.whl" in remote(ssh)


def test_run_tpu_dry_run(guard):
    mkdir, scp, ssh = dry(
        guard,
        "run_tpu.sh",
        *TPU,
        f"--config={CONFIG}:tiny",
        "--workdir=gs://my-bucket/jaxit/run 1",
        "--config.task=sst2",
        "--config.note=hello world",
        "--config.quote=it's",
        "--env=XLA_FLAGS=--a --b",
        "--",
        "--max_steps=10",
    )
    tpu = ["gcloud", "compute", "tpus", "tpu-vm"]
    assert mkdir == tpu + [
        "ssh",
        "jaxit-test",
        "--zone=us-central2-b",
        "--worker=all",
        "--command=mkdir -p jaxit_run",
    ]
    assert scp == tpu + [
        "scp",
        CONFIG,
        "jaxit-test:jaxit_run/finetune.py",
        "--zone=us-central2-b",
        "--worker=all",
    ]
    assert ssh[:8] == tpu + ["ssh", "jaxit-test", "--zone=us-central2-b", "--worker=all"]
    words = remote(ssh)
    i = words.index("train")
    assert words[i - 3 : i + 10] == [
        "env",
        "XLA_FLAGS=--a --b",
        "jaxit-venv/bin/jaxit",
        "train",
        "--config=jaxit_run/finetune.py:tiny",
        "--workdir=gs://my-bucket/jaxit/run 1",
        "--distributed",
        "--config.task=sst2",
        "--config.note=hello world",
        "--config.quote=it's",
        "--max_steps=10",
        "2>&1",
        "|",
    ]
    assert words[i + 10 :] == ["tee", "-a", "jaxit_logs/train.log"]
    # the printed line keeps the override readable: --config.note='hello world' inside the command
    line = guard(
        "run_tpu.sh",
        *TPU,
        f"--config={CONFIG}",
        "--workdir=w",
        "--config.note=hello world",
        "--dry-run",
        check=0,
    ).stdout.splitlines()[-1]
    assert "--config.note='\\''hello world'\\''" in line and "--worker=all" in line


def test_run_tpu_no_copy_and_background_modes(guard):
    (ssh,) = dry(
        guard,
        "run_tpu.sh",
        *TPU,
        "--config=~/jaxit/experiments/configs/finetune.py",
        "--workdir=~/runs/x",
        "--no-copy-config",
        "--nohup",
        "--log=logs/a b.log",
    )
    words = remote(ssh)
    assert words[:2] == ["cd", "&&"] and "nohup" in words and "--distributed" in words
    assert "--config=jaxit/experiments/configs/finetune.py" in words and "--workdir=runs/x" in words
    assert ">>" in words and "logs/a b.log" in words
    (ssh,) = dry(
        guard,
        "run_tpu.sh",
        *TPU,
        f"--config={CONFIG}",
        "--workdir=w",
        "--no-copy-config",
        "--tmux",
        "--session=exp1",
    )
    words = remote(ssh)
    i = words.index("new-session")
    assert words[i - 1 : i + 5] == ["tmux", "new-session", "-d", "-s", "exp1", "-c"]
    inner = shlex.split(words[i + 6])  # the command tmux runs
    assert "--distributed" in inner and inner[-3:] == ["tee", "-a", "jaxit_logs/train.log"]


def test_run_tpu_stop(guard):
    (ssh,) = dry(guard, "run_tpu.sh", *TPU, "--stop")
    assert "--worker=all" in ssh and "pkill" in remote(ssh)


def test_cuda_single_host_dry_run(guard):
    (argv,) = dry(
        guard, "run_cuda.sh", "train", f"--config={CONFIG}", "--workdir=runs/x", "--config.note=a b"
    )
    assert argv[:2] == ["bash", "-c"]
    words = shlex.split(argv[2])
    i = words.index("jaxit")
    assert words[i : i + 5] == [
        "jaxit",
        "train",
        f"--config={CONFIG}",
        "--workdir=runs/x",
        "--config.note=a b",
    ]
    assert "--distributed" not in words


def test_cuda_multi_host_dry_run(guard):
    lines = dry(
        guard,
        "run_cuda.sh",
        "train",
        "--hosts=me@gpu0,gpu1,gpu2",
        f"--config={CONFIG}",
        "--workdir=/nfs/runs/x",
        "--config.note=a b",
        "--",
        "--max_steps=5",
    )
    assert lines[:2] == [
        ["ssh", "me@gpu0", "mkdir -p jaxit_run"],
        ["scp", CONFIG, "me@gpu0:jaxit_run/finetune.py"],
    ]
    runs = lines[6:]
    assert [r[:2] for r in runs] == [["ssh", "me@gpu0"], ["ssh", "gpu1"], ["ssh", "gpu2"]]
    for i, r in enumerate(runs):
        assert len(r) == 3
        words = shlex.split(r[2])
        j = words.index("train")
        assert words[j - 1 : j + 9] == [
            "jaxit-venv/bin/jaxit",
            "train",
            "--config=jaxit_run/finetune.py",
            "--workdir=/nfs/runs/x",
            "--distributed",
            "--coordinator_address=gpu0:1234",
            "--num_processes=3",
            f"--process_id={i}",
            "--config.note=a b",
            "--max_steps=5",
        ]


def test_cuda_one_remote_host_is_not_distributed(guard):
    *_, (_ssh, _host, cmd) = dry(
        guard,
        "run_cuda.sh",
        "train",
        "--hosts=gpu0",
        f"--config={CONFIG}",
        "--workdir=w",
        "--coordinator=10.0.0.1:9999",
    )
    assert "--distributed" not in cmd and "coordinator" not in cmd


def test_cuda_install_dry_run(guard, tmp_path):
    (argv,) = dry(guard, "run_cuda.sh", "install", "--git=https://github.com/org/jaxit.git")
    assert argv == [
        "python3",
        "-m",
        "pip",
        "install",
        "jax[cuda12]",
        "jaxit @ git+https://github.com/org/jaxit.git",
    ]
    (argv,) = dry(guard, "run_cuda.sh", "install", f"--editable={ROOT}", "--extras=data")
    assert argv == ["python3", "-m", "pip", "install", "jax[cuda12]", "-e", f"{ROOT}[data]"]
    hostfile = tmp_path / "hosts"
    hostfile.write_text("# cluster\ngpu0 slots=8\n\ngpu1\n")
    lines = dry(
        guard,
        "run_cuda.sh",
        "install",
        f"--hostfile={hostfile}",
        "--git=https://github.com/org/jaxit.git",
        "--ref=main",
    )
    assert [a[:2] for a in lines] == [["ssh", "gpu0"], ["ssh", "gpu1"]]
    assert "jax[cuda12]" in shlex.split(lines[0][2])


def test_cuda_stop_dry_run(guard):
    assert [a[:2] for a in dry(guard, "run_cuda.sh", "stop", "--hosts=a,b")] == [
        ["ssh", "a"],
        ["ssh", "b"],
    ]
    assert dry(guard, "run_cuda.sh", "stop")[0][:2] == ["bash", "-c"]


# --- bad input: non-zero exit, a message naming the problem, nothing run ----------------------

GOOD_RUN = [*TPU, f"--config={CONFIG}", "--workdir=gs://my-bucket/x"]


@pytest.mark.parametrize(
    "script,args,message",
    [
        (
            "create_tpu.sh",
            ["--zone=us-central2-b", "--accelerator-type=v4-8"],
            "missing required option --name",
        ),
        (
            "create_tpu.sh",
            ["--name=t", "--accelerator-type=v4-8"],
            "missing required option --zone",
        ),
        ("create_tpu.sh", TPU, "missing required option --accelerator-type"),
        ("create_tpu.sh", [*TPU, "--accelerator-type=a100"], "invalid --accelerator-type 'a100'"),
        ("create_tpu.sh", [*TPU, "--accelerator-type=v4"], "invalid --accelerator-type 'v4'"),
        ("create_tpu.sh", [*TPU, "--accelerator-type=v4-0"], "invalid --accelerator-type"),
        (
            "create_tpu.sh",
            ["--name=t", "--zone=uscentral2", "--accelerator-type=v4-8"],
            "invalid --zone 'uscentral2'",
        ),
        (
            "create_tpu.sh",
            ["--name=My_TPU", "--zone=us-central2-b", "--accelerator-type=v4-8"],
            "invalid --name 'My_TPU'",
        ),
        (
            "create_tpu.sh",
            [*TPU, "--accelerator-type=v4-8", "--project=X"],
            "invalid --project 'X'",
        ),
        (
            "create_tpu.sh",
            [*TPU, "--accelerator-type=v4-8", "--spot", "--preemptible"],
            "--preemptible and --spot: choose one",
        ),
        ("create_tpu.sh", ["--name", "t"], "option --name needs a value"),
        ("create_tpu.sh", [*TPU, "--colour=red"], "unknown option --colour"),
        ("create_tpu.sh", [*TPU, "stray"], "unexpected argument 'stray'"),
        ("delete_tpu.sh", ["--name=t"], "missing required option --zone"),
        ("setup_tpu.sh", TPU, "missing the jaxit source"),
        ("setup_tpu.sh", [*TPU, "--git=git@github.com:o/j.git"], "invalid --git"),
        ("setup_tpu.sh", [*TPU, "--git=https://x/y", "--wheel=x.whl"], "mutually exclusive"),
        ("setup_tpu.sh", [*TPU, "--wheel=/no/such/jaxit.whl"], "wheel/sdist not found"),
        ("setup_tpu.sh", [*TPU, "--git=https://x/y", "--worker=two"], "invalid --worker 'two'"),
        ("setup_tpu.sh", [*TPU, "--git=https://x/y", "--python=python3"], "invalid --python"),
        ("setup_tpu.sh", [*TPU, "--git=https://x/y", "--ref=a b"], "invalid --ref"),
        ("run_tpu.sh", [*TPU, "--workdir=w"], "missing required option --config"),
        ("run_tpu.sh", [*TPU, f"--config={CONFIG}"], "missing required option --workdir"),
        ("run_tpu.sh", [*TPU, "--config=nope.py", "--workdir=w"], "config file not found: nope.py"),
        ("run_tpu.sh", [*GOOD_RUN, "--config.task"], "override --config.task needs a value"),
        (
            "run_tpu.sh",
            [*TPU, f"--config={CONFIG}", "--workdir=gs://B/x"],
            "invalid --workdir 'gs://B/x'",
        ),
        ("run_tpu.sh", [*GOOD_RUN, "--env=1A=2"], "invalid --env '1A=2'"),
        ("run_tpu.sh", [*GOOD_RUN, "--session=a b", "--tmux"], "invalid --session"),
        ("run_tpu.sh", [*GOOD_RUN, "--workdir"], "option --workdir needs a value"),
        ("run_tpu.sh", [f"--config={CONFIG}", "--workdir=w"], "missing required option --name"),
        ("run_cuda.sh", [], "missing command"),
        ("run_cuda.sh", ["launch"], "unknown command 'launch'"),
        ("run_cuda.sh", ["train", "--workdir=w"], "missing required option --config"),
        (
            "run_cuda.sh",
            ["train", "--hosts=a,a", f"--config={CONFIG}", "--workdir=w"],
            "host a is listed twice",
        ),
        (
            "run_cuda.sh",
            ["train", "--hosts=a,", f"--config={CONFIG}", "--workdir=w"],
            "invalid --hosts",
        ),
        (
            "run_cuda.sh",
            ["train", "--hosts=a b", f"--config={CONFIG}", "--workdir=w"],
            "invalid --hosts",
        ),
        (
            "run_cuda.sh",
            ["train", "--hostfile=/no/such/file", f"--config={CONFIG}", "--workdir=w"],
            "host file not found",
        ),
        (
            "run_cuda.sh",
            ["train", "--hosts=a,b", f"--config={CONFIG}", "--workdir=w", "--coordinator=a"],
            "invalid --coordinator 'a'",
        ),
        (
            "run_cuda.sh",
            ["train", "--hosts=a,b", f"--config={CONFIG}", "--workdir=w", "--coordinator=a:70000"],
            "invalid --coordinator port",
        ),
        ("run_cuda.sh", ["install"], "missing the jaxit source"),
        (
            "run_cuda.sh",
            ["install", "--hosts=a", f"--editable={ROOT}"],
            "--editable is for this machine only",
        ),
        (
            "run_cuda.sh",
            ["install", "--coordinator=a:1", "--git=https://x/y"],
            "unknown option --coordinator",
        ),
        ("run_cuda.sh", ["stop", "--config=x"], "unknown option --config"),
    ],
)
def test_bad_arguments(guard, script, args, message):
    for extra in ([], ["--dry-run"]):
        p = guard(script, *args, *extra)
        assert p.returncode != 0
        assert message in p.stderr, p.stderr
        assert p.stdout == ""


def test_empty_hostfile(guard, tmp_path):
    (tmp_path / "hosts").write_text("# nobody\n")
    p = guard("run_cuda.sh", "stop", f"--hostfile={tmp_path / 'hosts'}")
    assert p.returncode != 0 and "no hosts in" in p.stderr


# --- the commands really work: a simulated TPU VM / GPU cluster --------------------------------

FAKE_GCLOUD = r'''#!{python}
"""fake gcloud compute tpus tpu-vm {create,delete,ssh,scp}: workers are $SIM/w<i> homes."""
import json, os, shutil, subprocess, sys
from pathlib import Path
sim, args = Path(os.environ["SIM"]), sys.argv[1:]
with open(sim / "calls.jsonl", "a") as f:
    f.write(json.dumps(["gcloud", *args]) + "\n")
assert args[:3] == ["compute", "tpus", "tpu-vm"], args
opts = dict(a[2:].split("=", 1) for a in args[4:] if a.startswith("--") and "=" in a)
pos = [a for a in args[4:] if not a.startswith("--")]
n = int(os.environ.get("SIM_WORKERS", "2"))
w = opts.get("worker", "0")
workers = range(n) if w == "all" else [int(x) for x in w.split(",")]
rc = 0
for i in workers:
    home = sim / f"w{i}"
    home.mkdir(exist_ok=True)
    if args[3] == "ssh":
        env = dict(os.environ, HOME=str(home), TPU_WORKER_ID=str(i))
        rc |= subprocess.run(["bash", "-c", opts["command"]], cwd=home, env=env).returncode
    elif args[3] == "scp":
        shutil.copy(pos[0], home / pos[1].split(":", 1)[1])
sys.exit(rc)
'''

FAKE_SSH = r"""#!/bin/bash
# fake ssh HOST CMD / scp SRC HOST:DEST: hosts are $SIM/<host> homes
echo "$(basename "$0") $*" >> "$SIM/calls.txt"
if [ "$(basename "$0")" = scp ]; then
  host=${2%%:*}; mkdir -p "$SIM/$host"; cp "$1" "$SIM/$host/${2#*:}"; exit
fi
mkdir -p "$SIM/$1"; cd "$SIM/$1" && HOME=$PWD exec bash -c "$2"
"""

FAKE_JAXIT = r"""#!/bin/bash
# fake jaxit: checks the config file is there, records its arguments
for a; do case $a in --config=*) c=${a#--config=}; c=${c%%:*}
  [ -f "$c" ] || { echo "fake jaxit: no config file $c" >&2; exit 3; };; esac; done
printf '%s\0' "$@" > "$HOME/jaxit_args"
echo "fake jaxit ran in $PWD"
exit "${FAKE_JAXIT_RC:-0}"
"""

FAKE_TMUX = r"""#!/bin/bash
# fake tmux new-session -d -s NAME -c DIR CMD: run CMD with bash in DIR, in the background
[ "$1" = new-session ] || exit 0
shift; dir=.
while [ $# -gt 1 ]; do
  case $1 in
    -c) dir=$2; shift 2 ;;
    -s) echo "$2" > "$HOME/tmux_session"; shift 2 ;;
    *) shift ;;
  esac
done
cd "$dir" && nohup bash -c "$1" > /dev/null 2>&1 < /dev/null &
"""

FAKE_UV = r"""#!/bin/bash
# fake uv: `uv venv ... DIR` makes DIR/bin/python; records the arguments of `uv pip ...`
if [ "$1" = venv ]; then d=${!#}; mkdir -p "$d/bin"
  printf '#!/bin/bash\nexit 0\n' > "$d/bin/python"; chmod +x "$d/bin/python"
else printf '%s\0' "$@" > "$HOME/uv_args"; fi
"""


@pytest.fixture
def sim(tmp_path):
    """Fakes for a TPU VM with 2 workers ($SIM/w0, w1) and GPU hosts ($SIM/<host>)."""
    root, bindir = tmp_path / "sim", tmp_path / "simbin"
    root.mkdir()
    bindir.mkdir()
    _write_exe(bindir / "gcloud", FAKE_GCLOUD.replace("{python}", sys.executable))
    for name, text in [
        ("ssh", FAKE_SSH),
        ("scp", FAKE_SSH),
        ("tmux", FAKE_TMUX),
        ("uv", FAKE_UV),
        ("jaxit", FAKE_JAXIT),
    ]:
        _write_exe(bindir / name, text)
    for tool in ("curl", "python3", "pip"):
        _write_exe(bindir / tool, f"#!/bin/bash\necho 'sim: {tool} must not run' >&2\nexit 99\n")

    def homes(*names):  # a venv with the fake jaxit in each home
        for n in names:
            (root / n / "jaxit-venv" / "bin").mkdir(parents=True)
            shutil.copy(bindir / "jaxit", root / n / "jaxit-venv" / "bin" / "jaxit")

    def call(script, *args, env=None, **kw):
        return _sh(script, *args, bindir=bindir, env={"SIM": str(root), **(env or {})}, **kw)

    return root, homes, call


def _jaxit_args(home: Path, wait: float = 0.0) -> list[str]:
    f = home / "jaxit_args"
    deadline = time.time() + wait
    while not (f.exists() and f.stat().st_size) and time.time() < deadline:
        time.sleep(0.05)
    return f.read_bytes().decode().split("\0")[:-1]


def test_sim_run_tpu_foreground(sim, guard):
    root, homes, call = sim
    homes("w0", "w1")
    args = [
        *TPU,
        f"--config={CONFIG}:tiny",
        "--workdir=gs://my-bucket/run 1",
        "--config.task=sst2",
        "--config.note=hello world",
        "--config.quote=it's $HOME",
        "--",
        "--max_steps=10",
    ]
    p = call("run_tpu.sh", *args, check=0)
    for w in ("w0", "w1"):
        home = root / w
        assert _jaxit_args(home) == [
            "train",
            "--config=jaxit_run/finetune.py:tiny",
            "--workdir=gs://my-bucket/run 1",
            "--distributed",
            "--config.task=sst2",
            "--config.note=hello world",
            "--config.quote=it's $HOME",
            "--max_steps=10",
        ]
        assert (home / "jaxit_run" / "finetune.py").read_text() == (ROOT / CONFIG).read_text()
        assert f"fake jaxit ran in {home}" in (home / "jaxit_logs" / "train.log").read_text()
    assert p.stdout.count("fake jaxit ran in") == 2
    # the real run made exactly the gcloud calls the dry run prints
    calls = [json.loads(line) for line in (root / "calls.jsonl").read_text().splitlines()]
    assert calls == dry(guard, "run_tpu.sh", *args)


def test_sim_run_tpu_failure_propagates(sim):
    _, homes, call = sim
    homes("w0", "w1")
    p = call("run_tpu.sh", *TPU, f"--config={CONFIG}", "--workdir=w", env={"FAKE_JAXIT_RC": "5"})
    assert p.returncode != 0


@pytest.mark.parametrize("mode", ["--nohup", "--tmux"])
def test_sim_run_tpu_background(sim, mode):
    root, homes, call = sim
    homes("w0", "w1")
    p = call(
        "run_tpu.sh",
        *TPU,
        f"--config={CONFIG}",
        "--workdir=~/runs/x",
        "--config.note=a b",
        mode,
        "--log=logs/my run.log",
        check=0,
    )
    assert p.stdout.count("log: logs/my run.log") == 2
    for w in ("w0", "w1"):
        args = _jaxit_args(root / w, wait=10)
        assert args == [
            "train",
            "--config=jaxit_run/finetune.py",
            "--workdir=runs/x",
            "--distributed",
            "--config.note=a b",
        ]
        log = root / w / "logs" / "my run.log"
        deadline = time.time() + 10
        while (
            "fake jaxit ran" not in (log.read_text() if log.exists() else "")
            and time.time() < deadline
        ):
            time.sleep(0.05)
        assert "fake jaxit ran" in log.read_text()
    if mode == "--tmux":
        assert (root / "w0" / "tmux_session").read_text().strip() == "jaxit"


def test_sim_setup_tpu(sim, guard, tmp_path):
    root, _, call = sim
    for args, spec in [
        (
            ["--git=https://github.com/org/jaxit.git", "--ref=v0.1", "--extras=data,tfds"],
            "jaxit[data,tfds] @ git+https://github.com/org/jaxit.git@v0.1",
        ),
        (
            [f"--wheel={tmp_path / 'jaxit-0.1.0-py3-none-any.whl'}"],
            "./jaxit-0.1.0-py3-none-any.whl",
        ),
    ]:
        (tmp_path / "jaxit-0.1.0-py3-none-any.whl").write_bytes(b"wheel")
        (root / "calls.jsonl").unlink(missing_ok=True)
        p = call("setup_tpu.sh", *TPU, *args, "--pip=gcsfs>=2024", "--venv=~/my venv", check=0)
        assert p.stdout.count("jaxit ready") == 2
        for w in ("w0", "w1"):
            uv = (root / w / "uv_args").read_bytes().decode().split("\0")[:-1]
            assert uv == [
                "pip",
                "install",
                "--reinstall-package",
                "jaxit",
                "--python",
                "my venv/bin/python",
                "jax[tpu]",
                spec,
                "gcsfs>=2024",
            ]
            assert (root / w / "my venv" / "bin" / "python").exists()
        calls = [json.loads(line) for line in (root / "calls.jsonl").read_text().splitlines()]
        assert calls == dry(
            guard, "setup_tpu.sh", *TPU, *args, "--pip=gcsfs>=2024", "--venv=~/my venv"
        )
    assert (root / "w1" / "jaxit-0.1.0-py3-none-any.whl").read_bytes() == b"wheel"


def test_sim_create_and_delete_match_dry_run(sim, guard):
    root, _, call = sim
    for script, args in [
        ("create_tpu.sh", [*TPU, "--accelerator-type=v5litepod-16", "--spot"]),
        ("delete_tpu.sh", [*TPU, "--yes", "--async"]),
    ]:
        (root / "calls.jsonl").unlink(missing_ok=True)
        call(script, *args, check=0)
        calls = [json.loads(line) for line in (root / "calls.jsonl").read_text().splitlines()]
        assert calls == dry(guard, script, *args)


def test_sim_cuda_multi_host(sim):
    root, homes, call = sim
    homes("gpu0", "gpu1")
    call(
        "run_cuda.sh",
        "train",
        "--hosts=gpu0,gpu1",
        f"--config={CONFIG}:tiny",
        "--workdir=/nfs/x y",
        "--config.note=a b",
        "--env=XLA_PYTHON_CLIENT_MEM_FRACTION=.5",
        check=0,
    )
    for i, h in enumerate(("gpu0", "gpu1")):
        assert _jaxit_args(root / h) == [
            "train",
            "--config=jaxit_run/finetune.py:tiny",
            "--workdir=/nfs/x y",
            "--distributed",
            "--coordinator_address=gpu0:1234",
            "--num_processes=2",
            f"--process_id={i}",
            "--config.note=a b",
        ]
        assert (root / h / "jaxit_logs" / "train.log").exists()


def test_sim_cuda_multi_host_failure(sim):
    _, homes, call = sim
    homes("gpu0", "gpu1")
    p = call(
        "run_cuda.sh",
        "train",
        "--hosts=gpu0,gpu1",
        f"--config={CONFIG}",
        "--workdir=w",
        env={"FAKE_JAXIT_RC": "4"},
    )
    assert p.returncode == 1 and "failed on at least one host" in p.stderr


def test_sim_cuda_local(sim, tmp_path):
    root, _, call = sim
    run = tmp_path / "here"
    run.mkdir()
    env = {"HOME": str(run)}  # the fake jaxit on PATH records into $HOME
    call(
        "run_cuda.sh",
        "train",
        f"--config={ROOT / CONFIG}",
        "--workdir=runs/a b",
        "--config.note=x'y",
        cwd=run,
        env=env,
        check=0,
    )
    assert _jaxit_args(run) == [
        "train",
        f"--config={ROOT / CONFIG}",
        "--workdir=runs/a b",
        "--config.note=x'y",
    ]
    assert "fake jaxit ran" in (run / "jaxit_logs" / "train.log").read_text()
    assert not (root / "calls.txt").exists()  # no ssh/scp for a local run


def test_sim_cuda_install_hosts(sim):
    root, _, call = sim
    p = call(
        "run_cuda.sh",
        "install",
        "--hosts=gpu0,gpu1",
        "--git=https://github.com/org/jaxit.git",
        check=0,
    )
    assert p.stdout.count("jaxit ready") == 2
    for h in ("gpu0", "gpu1"):
        uv = (root / h / "uv_args").read_bytes().decode().split("\0")[:-1]
        assert uv[-2:] == ["jax[cuda12]", "jaxit @ git+https://github.com/org/jaxit.git"]


@pytest.mark.slow
def test_sim_cuda_two_hosts_real_jaxit(sim, tmp_path):
    """The real `jaxit train` CLI, two processes over the simulated ssh, jax.distributed on CPU."""
    import socket

    jaxit = Path(sys.executable).parent / "jaxit"
    if not jaxit.exists():
        pytest.skip("jaxit is not installed in this environment")
    root, _, call = sim
    for h in ("h0", "h1"):
        (root / h / "jaxit-venv" / "bin").mkdir(parents=True)
        (root / h / "jaxit-venv" / "bin" / "jaxit").symlink_to(jaxit)
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    workdir = tmp_path / "shared run"
    p = call(
        "run_cuda.sh",
        "train",
        "--hosts=h0,h1",
        f"--coordinator=localhost:{port}",
        f"--config={CONFIG}:tiny",
        f"--workdir={workdir}",
        "--config.train.num_steps=4",
        "--env=JAX_PLATFORMS=cpu",
        "--env=JAX_CPU_COLLECTIVES_IMPLEMENTATION=gloo",
        "--",
        "--max_steps=2",
    )
    assert p.returncode == 0, p.stderr[-3000:]
    result = json.loads((workdir / "result.json").read_text())
    assert result["step"] == 2 and result["num_steps"] == 4
    for i, h in enumerate(("h0", "h1")):  # jaxit logs its jax.distributed rank
        assert f"process {i} of 2" in (root / h / "jaxit_logs" / "train.log").read_text()
    _assert_same_as_one_process(workdir, tmp_path / "one process")


def _assert_same_as_one_process(workdir, ref_dir):
    """The two-process run's params after 2 steps equal one process's on the same global
    batches (each host fed its own rows); only the reduction order differs. A one-step run
    shows that the second step moves the params by far more than the tolerance."""
    import jax
    import numpy as np

    from jaxit.configs import config_from_run
    from jaxit.train.init_from import load_run_params
    from jaxit.train.loop import train

    config = config_from_run(workdir)
    with jax.numpy_dtype_promotion("standard"):  # optax (see conftest's marker)
        train(config, ref_dir / "1", max_steps_this_run=1)
        train(config, ref_dir / "2", max_steps_this_run=2)
    flat = lambda d: {jax.tree_util.keystr(k): np.asarray(v)
                      for k, v in jax.tree_util.tree_leaves_with_path(load_run_params(d, "latest"))}
    two, one, first = flat(workdir), flat(ref_dir / "2"), flat(ref_dir / "1")
    assert two.keys() == one.keys()
    for k in two:
        np.testing.assert_allclose(two[k], one[k], atol=2e-6, rtol=1e-5, err_msg=k)
    assert max(np.abs(one[k] - first[k]).max() for k in one) > 1e-4
