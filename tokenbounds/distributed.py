"""Many processes under torchrun: who this process is, and the little the processes say to each other.

`torchrun --nproc_per_node N -m tokenbounds bound ...` (and `--nnodes`) starts N copies of the same command with
WORLD_SIZE, RANK and LOCAL_RANK set. `join_world` reads them and joins torch.distributed's default group over gloo
(TCP: within a node or across nodes; only small per-batch sums travel, never tensors of the model). Without those
variables, or with WORLD_SIZE 1, nothing is initialised and the one process is the whole world.

Every rank walks the same global batch plan and scores its share, and every round's sums reach every rank, so that
all compute the same statistics and take the same decisions on them (--target-slack's rounds). Rank 0 alone
resolves what is resolved at start (it opens and prices the hypothesis, and the compute dtype it resolved is the one
every rank runs: `share_hypothesis`), writes the run directory, prints the report and writes its files. Ranks must
be started with the same request: `World.agree` refuses, on every rank, a request that differs from rank 0's.

A rank that fails (a bad input only it sees, a full disk on rank 0) prints its one line and exits; torchrun then
stops the others, so no rank waits forever on a collective call.
"""

import datetime
import json
import os
from dataclasses import dataclass

from tokenbounds.errors import UserError
from tokenbounds.hypothesis import Hypothesis
from tokenbounds.models.base import AUTO_DEVICE, check_device
from tokenbounds.models.registry import open_model

# Rank 0 may price a large checkpoint (gzip of a 140 GB file: about an hour) while the others wait on it.
WAIT = datetime.timedelta(hours=12)


def leader_process() -> bool:
    """Whether this process is rank 0 (or not under torchrun), from the environment alone: no torch import."""
    return int(os.environ.get("RANK", "0")) == 0


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1  # ranks on this node (LOCAL_WORLD_SIZE)

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def all_gather(self, value) -> list:
        """Every rank's `value` (picklable), in rank order, on every rank."""
        if self.size == 1:
            return [value]
        import torch.distributed as dist

        gathered = [None] * self.size
        dist.all_gather_object(gathered, value)
        return gathered

    def broadcast(self, value):
        """Rank 0's `value` on every rank."""
        if self.size == 1:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def agree(self, request: dict) -> None:
        """Refuse, on every rank, a request (a JSON-like record of every setting) that differs on some rank."""
        if self.size == 1:
            return
        requests = self.all_gather({key: json.dumps(value, sort_keys=True) for key, value in request.items()})
        for rank, other in enumerate(requests):  # compared as JSON text: NaN is NaN, and (1, 2) is [1, 2]
            differ = sorted(key for key in requests[0].keys() | other.keys() if requests[0].get(key) != other.get(key))
            if differ:
                shown = ", ".join(f"{key} {other.get(key)} (rank 0: {requests[0].get(key)})" for key in differ[:3])
                raise UserError(f"torchrun ranks disagree: rank {rank} was started with {shown}; give every rank the "
                                "same arguments")  # fmt: skip

    def device(self, device: str) -> str:
        """Rank r's device: `cuda` means cuda:LOCAL_RANK (made the current device, so the name stays `cuda`).

        `auto` spreads one model over every GPU the process sees, so it is for one rank per node (a model larger
        than one GPU, e.g. LLaMA-2-70B in bfloat16, over a node's GPUs, one replica per node)."""
        if self.local_size > 1 and device == AUTO_DEVICE:
            raise UserError("--device auto spreads one model over every GPU of the node; under torchrun use it with "
                            "--nproc_per_node 1, or give --device cuda, one GPU per rank")  # fmt: skip
        if self.size > 1 and device == "cuda":
            import torch

            if torch.cuda.is_available():
                torch.cuda.set_device(self.local_rank)
        return device

    def share_hypothesis(self, hypothesis: Hypothesis | None, req, rule, corpus) -> Hypothesis:
        """Rank 0's hypothesis (opened and priced there) on every rank: the others open the model in rank 0's
        compute dtype, check it as rank 0 did, and take rank 0's prior and dtype record instead of pricing again."""
        if self.size == 1:
            return hypothesis
        prior, choice = self.broadcast((hypothesis.prior, hypothesis.compute_dtype_choice) if self.leader else None)
        if self.leader:
            return hypothesis
        if req.quip_sharp is None:
            check_device(req.device)
        model = open_model(req.model, choice["resolved"], req.device, quip_sharp=req.quip_sharp,
                           quip_python=req.quip_python)  # fmt: skip
        corpus.check_vocab(model.vocab_size, progress=False)  # (rank 0 shows a raw file's scan)
        rule.check(corpus, model.max_positions)
        return Hypothesis(model, rule, prior, choice)

    def close(self) -> None:
        if self.size == 1:
            return
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def join_world() -> World:
    """This process's place among torchrun's (WORLD_SIZE, RANK, LOCAL_RANK), joining the gloo group; else alone."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World()
    import torch.distributed as dist

    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    local_size = int(os.environ.get("LOCAL_WORLD_SIZE", str(size)))
    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=WAIT)
    return World(rank, size, local_rank, local_size)
