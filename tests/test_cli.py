"""The command line as a user meets it, in fresh processes: start-up without torch, `--version`, one `error:`
line (never a traceback) for every ordinary mistake, Ctrl-C, a folder in use, a Hub that never answers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch

from modelzoos.cli import main

ROOT = Path(__file__).resolve().parent.parent


def cli(*args, env: dict | None = None, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m modelzoos.cli ARGS`` in a fresh process (this checkout on PYTHONPATH)."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "modelzoos.cli", *map(str, args)], env=environment, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def one_error(proc: subprocess.CompletedProcess, *fragments: str, code: int = 2) -> str:
    """The one `error:` line of a failed command (asserting the exit code, no traceback, the fragments)."""
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == code, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def python(code: str, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                          timeout=600, **kwargs)


# ---------------------------------------------------------------------------------------------------------
# Start-up
# ---------------------------------------------------------------------------------------------------------


def test_help_and_version_do_not_import_torch():
    proc = python("""
        import sys
        from modelzoos.cli import main
        for argv in (["--help"], ["--version"], ["generate", "--help"], ["build", "--help"]):
            try:
                main(argv)
            except SystemExit as exit:
                assert exit.code == 0
        print("TORCH", "torch" in sys.modules)
    """)
    assert proc.returncode == 0, proc.stderr
    assert "usage: modelzoos" in proc.stdout and "TORCH False" in proc.stdout
    version = cli("--version")
    assert version.returncode == 0 and version.stdout.startswith("modelzoos ")


def test_build_and_verify_do_not_import_torch(zoo_dir, tmp_path):
    repo = tmp_path / "repo"
    proc = python(f"""
        import sys
        from modelzoos.cli import main
        assert main(["build", {str(zoo_dir.path)!r}, "--repo", {str(repo)!r}, "--quiet"]) == 0
        assert main(["verify", {str(repo)!r}]) == 0
        print("TORCH", "torch" in sys.modules, "TORCHVISION", "torchvision" in sys.modules)
    """)
    assert proc.returncode == 0, proc.stderr
    assert "TORCH False TORCHVISION False" in proc.stdout
    assert "from modelzoos.loading import load_zoo" in proc.stdout and "= load_dataset(" not in proc.stdout


# ---------------------------------------------------------------------------------------------------------
# One error line per mistake
# ---------------------------------------------------------------------------------------------------------


def test_generate_mistakes(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("mine")
    one_error(cli("generate", "digits_cnn_seed", "--out", a_file, "--models", 7), f"{a_file} is a file", "--out")
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / ".notes.tmp").write_text("keep")
    (theirs / "data.csv").write_text("keep")
    one_error(cli("generate", "digits_cnn_seed", "--out", theirs, "--models", 7), "is not empty (.notes.tmp, data.csv)",
              "choose another --out")
    assert sorted(p.name for p in theirs.iterdir()) == [".notes.tmp", "data.csv"]
    out = tmp_path / "z"
    for option, value, message in [("--chunk-size", 0, "--chunk-size must be at least 1, got 0"),
                                   ("--chunk-size", -1, "--chunk-size must be at least 1, got -1"),
                                   ("--threads", 0, "--threads must be at least 1, got 0"),
                                   ("--device", "gpu7", "--device 'gpu7' is not a torch device")]:
        one_error(cli("generate", "digits_cnn_seed", "--out", out, "--models", 7, option, value), message)
    spec = tmp_path / "spec.toml"
    spec.write_text('extends = "../../zoos/digits_cnn_seed.toml"\nname = "mine"\n')
    one_error(cli("generate", spec, "--out", out), "points outside the folder")
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a usable CUDA GPU")
def test_cuda_without_a_gpu_claims_nothing(tmp_path, zoo_dir):
    out = tmp_path / "z"
    one_error(cli("generate", "digits_cnn_seed", "--out", out, "--models", 7, "--device", "cuda"),
              "--device cuda: no CUDA GPU is usable on this machine", "use --device cpu")
    assert not out.exists()  # nothing claimed: the same command on cpu starts afresh
    one_error(cli("twins", zoo_dir.path, "--method", "vd", "--out", out, "--device", "cuda:1"), "no CUDA GPU")
    assert not out.exists()


def test_build_mistakes(tmp_path, zoo_dir):
    a_file = tmp_path / "a_file"
    a_file.write_text("mine")
    one_error(cli("build", zoo_dir.path, "--repo", a_file), f"{a_file} is a file", "--repo")
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "README.md").write_text("my own notes")
    one_error(cli("build", zoo_dir.path, "--repo", theirs), "is not empty (README.md)", "choose another --repo")
    assert (theirs / "README.md").read_text() == "my own notes" and sorted(os.listdir(theirs)) == ["README.md"]
    one_error(cli("build", tmp_path / "nowhere", "--repo", tmp_path / "r"), "not a zoo directory")


def test_bench_mistakes_fail_before_any_work(tmp_path, repo_dir):
    offline = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    a_file = tmp_path / "a_file"
    a_file.write_text("mine")
    cases = [
        (["digits_cnn_sed", "--repo", repo_dir], "'digits_cnn_sed' is not a config of", "digits_cnn_seed"),
        (["digits_cnn_seed", "--repo", tmp_path / "no_such_folder"], "is neither an existing folder nor a Hub"),
        (["digits_cnn_seed", "--repo", repo_dir, "--out", a_file], f"--out {a_file} is a file"),
        (["digits_cnn_seed", "--repo", repo_dir, "--baselines", "stat"], "--baselines: unknown ['stat']"),
        (["digits_cnn_seed", "--repo", repo_dir, "--threads", "0"], "--threads must be at least 1"),
    ]
    if not torch.cuda.is_available():
        cases.append((["digits_cnn_seed", "--repo", repo_dir, "--device", "cuda", "--baselines", "stats"],
                      "no CUDA GPU"))
    procs = [cli("bench", *args, "--quiet", env=offline) for args, *_ in cases]
    for proc, (_, *fragments) in zip(procs, cases, strict=True):
        one_error(proc, *fragments)
    assert a_file.read_text() == "mine"


def test_verify_mistakes(tmp_path):
    one_error(cli("verify", tmp_path / "nowhere"), "is not a folder")
    one_error(cli("verify", tmp_path), "neither a zoo directory")


# ---------------------------------------------------------------------------------------------------------
# Ctrl-C, a folder in use, a silent Hub
# ---------------------------------------------------------------------------------------------------------


def test_ctrl_c_during_generate_says_how_to_resume(tmp_path):
    out = tmp_path / "z"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "modelzoos.cli", "generate", "digits_cnn_seed", "--out", str(out),
                             "--models", "20", "--epochs", "3", "--quiet", "--threads", "1"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # a test runner started in the background (`make test &`) ignores SIGINT, and so
                            # would the child: give it the default disposition a terminal's Ctrl-C meets
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while proc.poll() is None and not (out / "zoo.json").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "generate finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=300)
    result = subprocess.CompletedProcess(proc.args, proc.returncode, "", stderr)
    one_error(result, "interrupted; rerun the same command to resume", code=130)


def test_a_folder_in_use_names_the_other_process(tmp_path, zoo_dir):
    repo = tmp_path / "repo"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from modelzoos.files import lock
        with lock({str(repo)!r}, "--repo"):
            print("held", flush=True)
            time.sleep(600)
    """)], env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        one_error(cli("build", zoo_dir.path, "--repo", repo, "--quiet"),
                  f"{repo} is being written by another modelzoos process (pid {holder.pid})", "wait for it")
        one_error(cli("push", repo, "--repo-id", "org/x"), f"(pid {holder.pid})")
        one_error(cli("generate", "digits_cnn_seed", "--out", repo, "--models", 7),
                  f"(pid {holder.pid})")  # not a zoo directory either, but the lock is checked first
    finally:
        holder.send_signal(signal.SIGKILL)  # the kernel releases its lock: the next build goes ahead
        holder.wait()
    assert cli("build", zoo_dir.path, "--repo", repo, "--quiet").returncode == 0
    assert not (repo / ".modelzoos.lock").exists()


@pytest.fixture
def silent_hub():
    """An HTTP endpoint that accepts connections and never answers (for push's timeouts and retries)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held, stop = [], threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_push_to_a_hub_that_never_answers_gives_up_and_says_why(repo_dir, copy_of, silent_hub, tmp_path):
    root = copy_of(repo_dir)
    env = {"HF_ENDPOINT": silent_hub, "HF_TOKEN": "hf_fake", "HF_HUB_DISABLE_XET": "1", "HF_HOME": str(tmp_path / "hf")}
    start = time.monotonic()
    proc = cli("push", root, "--repo-id", "org/zoos", "--timeout", "1", "--retries", "1", env=env)
    one_error(proc, "gave up creating the dataset repository for org/zoos: no answer from the Hub within 1 s",
              "2 attempt(s)", "--timeout")
    assert "warning: creating the dataset repository for org/zoos: no answer from the Hub within 1 s; waiting 2 s" \
        in proc.stderr
    assert time.monotonic() - start < 120


def test_cli_verify_prints_what_it_checked(zoo_dir, repo_dir, capsys):
    from modelzoos import manifest

    assert main(["verify", str(zoo_dir.path)]) == 0
    assert main(["verify", str(repo_dir)]) == 0
    out = capsys.readouterr().out
    assert f"ok: {zoo_dir.path} (zoo directory): {len(manifest.read(zoo_dir.path))} files" in out
    assert f"ok: {repo_dir} (repository folder): {len(manifest.read(repo_dir))} files" in out
    assert "every Parquet page matches its checksum" in out


def test_make_demo_says_where_everything_is(tmp_path):
    # CI runs `make test` inside make, so a nested make prints "Entering/Leaving directory" lines; the demo's
    # closing echo is found by its words, not by its position.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    plan = subprocess.run(["make", "--no-print-directory", "-n", "demo", f"OUT={tmp_path / 'd'}",
                           "VENV=/nonexistent"], cwd=ROOT, capture_output=True, text=True, env=env)
    assert plan.returncode == 0, plan.stderr
    text = plan.stdout[plan.stdout.index("demo done."):]
    for where in ("d/digits_cnn_seed", "d/hub", "d/bench/results.md", "d/bench/bench.png"):
        assert f"{tmp_path}/{where}" in text, text
