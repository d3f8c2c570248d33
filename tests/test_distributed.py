"""torchrun: two CPU processes over gloo report, timing aside, exactly what one process reports; ranks that disagree
are refused."""

import json
import socket
import subprocess
import sys

import numpy as np
import pytest

from tokenbounds.cli import main
from tokenbounds.distributed import World
from tokenbounds.errors import UserError

from .tiny_run import bound_args, environment, without_timing, write_tiny_corpus, write_tiny_gpt

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return write_tiny_gpt(root / "model"), write_tiny_corpus(root / "corpus")


def torchrun(args: list[str]) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    return subprocess.run([*command, "-m", "tokenbounds", *args], env=environment(), capture_output=True, text=True)


@pytest.mark.parametrize(
    "extra",
    [
        ("--samples", "400", "--target-slack", "0.3", "--batch-tokens", "64"),  # 2 rounds of draws: every rank decides
        ("--mode", "exhaustive", "--rule", "block", "--batch-tokens", "64"),
    ],
    ids=["sampled-block-eb-rounds", "exhaustive"],
)
def test_two_processes_report_what_one_does(tiny, tmp_path, capsys, extra):
    sampled = "--samples" in extra
    one, two = ([*extra, "--json", str(tmp_path / f"{n}.json")] for n in ("one", "two"))
    if sampled:  # the per-unit values too
        one += ["--units-out", str(tmp_path / "one.npz")]
        two += ["--units-out", str(tmp_path / "two.npz")]
    assert main(bound_args(*tiny, *one)) == 0
    if sampled:  # the run went on to a second round: the ranks had to agree on the first round's slack
        assert len(json.loads((tmp_path / "one.json").read_text())["target_slack"]["rounds"]) == 2
    capsys.readouterr()
    done = torchrun(bound_args(*tiny, *two, "--run-dir", str(tmp_path / "run")))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("best bits-per-token bound") == 1  # rank 0 alone prints the report
    (a, timing_one), (b, timing_two) = without_timing(tmp_path / "one.json"), without_timing(tmp_path / "two.json")
    assert a == b  # byte for byte, timing aside
    assert (timing_one["processes"], timing_two["processes"]) == (1, 2)
    assert timing_one["scored_targets"] == timing_two["scored_targets"]
    # Rank 0 recorded every batch: one process resumes the finished run to the same report, scoring nothing.
    resumed = bound_args(*tiny, *extra, "--run-dir", str(tmp_path / "run"), "--resume", "--json", str(tmp_path / "r"))
    assert main(resumed) == 0
    c, timing_resumed = without_timing(tmp_path / "r")
    assert (
        c == a
        and timing_resumed["resumed_batches"] > 0
        and timing_resumed["input_tokens"] == timing_one["input_tokens"]
    )
    if sampled:
        with np.load(tmp_path / "one.npz") as x, np.load(tmp_path / "two.npz") as y:
            assert x.files == y.files
            for name in x.files:
                assert np.array_equal(x[name], y[name]), name


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ranks_started_with_different_arguments_are_refused(tiny):
    """Two ranks joined by hand (as two nodes' launchers would), one asking for other samples: both refuse it."""
    port = str(free_port())
    ranks = []
    for rank, samples in enumerate(("100", "101")):
        env = environment(WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank))
        env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        args = bound_args(*tiny, "--samples", samples)
        ranks.append(subprocess.Popen([sys.executable, "-m", "tokenbounds", *args], env=env, stderr=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True))  # fmt: skip
    for process in ranks:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 2, err[-2000:]
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "torchrun ranks disagree" in lines[0], err
        assert "rank 1 was started with samples 101 (rank 0: 100)" in lines[0]
        assert not out


def test_a_world_of_one_needs_no_torch_distributed(monkeypatch):
    """Plain `python -m tokenbounds`: no WORLD_SIZE, nothing initialised, and every collective is the identity."""
    from tokenbounds.distributed import join_world

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    world = join_world()
    assert world == World() and world.leader
    assert world.all_gather(3) == [3] and world.broadcast("x") == "x"
    world.agree({"samples": 1})
    import torch.distributed as dist

    assert not dist.is_initialized()


def test_device_auto_is_for_one_rank_per_node():
    """`auto` spreads a model over every GPU of the node: with two ranks on a node they would both take them all."""
    assert World(rank=1, size=2, local_rank=0, local_size=1).device("auto") == "auto"  # one rank per node
    with pytest.raises(UserError, match="--nproc_per_node 1"):
        World(rank=1, size=4, local_rank=1, local_size=2).device("auto")
