"""A small full run for the multi-process tests, launched alone or under ``torchrun`` (gloo, CPU).

    python tests/fullrun_worker.py CKPT_DIR OUT_JSON
    torchrun --standalone --nproc_per_node=2 tests/fullrun_worker.py CKPT_DIR OUT_JSON

Every process appends each checkpoint it writes to ``OUT_JSON.saves-rank<R>``; with
``KD_TEST_DIE_AFTER=teacher:1`` the process that writes the teacher's epoch-1 checkpoint dies right
after it (a run killed after one epoch). Rank 0 writes the results to ``OUT_JSON``.
"""
import json
import os
import sys
import time
from pathlib import Path

import torch.distributed as dist

from kdutils import fullrun

CONFIG = fullrun.RunConfig(dataset="digits32", teacher_widths=(16, 32, 32), student_widths=(8, 16, 16), teacher_epochs=4,
                           student_epochs=4, batch_size=64, lr=0.05, augment=False, n_train=512, n_labeled=None)
SEEDS = [0, 1, 2]

real_save = fullrun.save_checkpoint


def recording_save(path, state):
    real_save(path, state)
    rank = os.environ.get("RANK", "0")
    with open(f"{sys.argv[2]}.saves-rank{rank}", "a") as f:
        f.write(f"{Path(path).name} {state['epoch']}\n")
    if os.environ.get("KD_TEST_DIE_AFTER") == f"{Path(path).stem}:{state['epoch']}":
        os._exit(3)


if __name__ == "__main__":
    fullrun.save_checkpoint = recording_save
    device = fullrun.init_processes() or "cpu"
    t0 = time.perf_counter()
    out = fullrun.run(CONFIG, checkpoint_dir=sys.argv[1], device=device, progress=False, student_seeds=SEEDS)
    seconds = time.perf_counter() - t0
    rank, world = fullrun.processes()
    if rank == 0:
        Path(sys.argv[2]).write_text(json.dumps({"processes": world, "seconds": seconds,
                                                 "table": out["table"].reset_index().to_dict("records"),
                                                 "seeds": out["seeds"].to_dict("records")}, default=str))
    if world > 1:
        dist.destroy_process_group()
