#!/usr/bin/env bash
# GPU check for a lent accelerator machine (no internet, no package index; torch, torchvision,
# pandas, seaborn, scikit-learn, tqdm and pytest preinstalled; no Jupyter/nbval/mnist1d).
# At most ~12 minutes. Writes $OUT/gpu_check.json (or ./build/gpu_check.json) and the logs beside it.
#   1. CUDA unit tests: losses in fp32/bf16 on CUDA, the device loader, checkpoints
#   2. the full-run code at GPU scale on generated CIFAR-shaped data in torchvision's layout (no download)
#   3. the throughput benchmark (reference DataLoader loop vs the course loop)
#   4. the full run under torchrun, one process per GPU
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-build}"; mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" KD_CACHE_DIR="$OUT/cache" MPLBACKEND=Agg
python -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))" | tee "$OUT/device.txt"

timeout 150 python -m pytest -q -p no:cacheprovider tests/test_losses.py tests/test_fullrun.py > "$OUT/unit.log" 2>&1
unit=$?

timeout 240 python - "$OUT" > "$OUT/fullrun.log" 2>&1 <<'PY'
import json, pickle, sys, time
from pathlib import Path
import numpy as np, torch
from kdutils import fullrun
out = Path(sys.argv[1]); root = out / "fake_cifar"; folder = root / "cifar-10-batches-py"
folder.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(0)
# class-dependent colour blobs, so the run has something learnable (random pixels would not be)
def batch(n):
    y = rng.integers(0, 10, n); base = np.stack([np.full((3, 32, 32), 25 * c, np.uint8) for c in range(10)])
    x = np.clip(base[y].astype(int) + rng.integers(-40, 40, (n, 3, 32, 32)), 0, 255).astype(np.uint8)
    return {b"data": x.reshape(n, -1), b"labels": y.tolist()}
for i in range(1, 6):
    pickle.dump(batch(10000), open(folder / f"data_batch_{i}", "wb"))
pickle.dump(batch(10000), open(folder / "test_batch", "wb"))
cfg = fullrun.RunConfig.for_scale("gpu", "cifar10", teacher_epochs=4, student_epochs=4)
t = time.time(); res = fullrun.run(cfg, checkpoint_dir=out / "ckpt", data_root=root, progress=False)
table = res["table"]; print(table.to_string())
t2 = time.time(); again = fullrun.run(cfg, checkpoint_dir=out / "ckpt", data_root=root, progress=False)
json.dump({"seconds": time.time() - t, "rerun_seconds": time.time() - t2, "table": table.reset_index().to_dict("records"),
           "rerun_resumed_from": again["table"]["resumed from epoch"].tolist()}, open(out / "fullrun.json", "w"), indent=1, default=str)
PY
full=$?

timeout 150 python benchmarks/kd_throughput.py --scale gpu > "$OUT/throughput.log" 2>&1
bench=$?

# 4. the same run under torchrun, one process per GPU (DDP, NCCL), 2 epochs, on the generated data
NGPU=$(python -c "import torch; print(torch.cuda.device_count())")
timeout 150 torchrun --standalone --nproc_per_node="$NGPU" -m kdutils.fullrun --dataset cifar10 --scale gpu --epochs 2 \
  --data-root "$OUT/fake_cifar" --checkpoint-dir "$OUT/ckpt-ddp" --json "$OUT/ddp.json" > "$OUT/ddp.log" 2>&1
ddp=$?

python - "$OUT" "$unit" "$full" "$bench" "$ddp" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1]); codes = dict(zip(["unit_tests", "fullrun", "benchmark", "torchrun"], map(int, sys.argv[2:])))
summary = {"exit_codes": codes, "device": (out / "device.txt").read_text().strip(),
           "unit_tail": (out / "unit.log").read_text()[-600:], "throughput": (out / "throughput.log").read_text()[-1200:]}
f = out / "fullrun.json"
summary["fullrun"] = json.loads(f.read_text()) if f.exists() else (out / "fullrun.log").read_text()[-1500:]
f = out / "ddp.json"
summary["torchrun"] = json.loads(f.read_text()) if f.exists() else (out / "ddp.log").read_text()[-1500:]
(out / "gpu_check.json").write_text(json.dumps(summary, indent=1))
print(json.dumps(summary, indent=1)[:4000])
PY
