"""The claims protocol: every experiment notebook registers a few primary claims, and the seed sweep counts them."""
import re
from pathlib import Path

import nbformat
from conftest import load_script

from kdutils import report

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p for p in (ROOT / "notebooks").glob("0[1-9]_*.ipynb"))


def _code(path):
    return "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")


def test_every_experiment_notebook_checks_a_few_primary_claims_under_its_own_name():
    for path in EXPERIMENTS:
        code = _code(path)
        assert f'report.Claims("{path.stem}")' in code, f"{path.name}: no report.Claims under its results name"
        n = len(re.findall(r"\bclaims\.check\(", code))
        assert 1 <= n <= 4, f"{path.name}: {n} primary claims (the protocol allows a few, at most four)"
        # a claim that holds only at full scale is a primary claim, not an assert hidden behind the profile
        assert not re.search(r"^if FULL:\s*(#.*)?\n\s+assert ", code, re.M), f"{path.name}: an 'if FULL: assert' left"


def test_sweep_table_counts_each_claim_over_seeds_and_flags_the_weak(tmp_path, monkeypatch):
    monkeypatch.setenv("KD_CLAIMS", "record")
    outcomes = {0: (True, True), 1: (True, False), 2: (True, True)}        # seed: (robust claim, fragile claim)
    for seed, (robust, fragile) in outcomes.items():
        monkeypatch.setenv("KD_SEED", str(seed))
        claims = report.Claims("03_demo", directory=tmp_path / f"seed{seed}" / "results")
        claims.check("robust", robust, "KD beats scratch", effect=0.10, noise=0.02)
        claims.check("fragile", fragile, "T = 1 beats T = 20", effect=0.03, noise=0.02)
        claims.secondary("aside", seed == 2, "an aside")
    # seed 3 stopped before its second claim: that claim counts as failed there
    monkeypatch.setenv("KD_SEED", "3")
    report.Claims("03_demo", directory=tmp_path / "seed3" / "results").check("robust", True, "KD beats scratch")
    sweep = load_script("benchmarks/claims_sweep.py")
    rows, md = sweep.table([Path("03_demo.ipynb")], [0, 1, 2, 3], tmp_path)
    by = {r["claim"]: r for r in rows}
    assert (by["robust"]["held"], by["robust"]["seeds"], by["robust"]["failed at"]) == (3, 3, [])
    assert by["robust"]["seed-0 effect / noise"] == 5.0
    assert (by["fragile"]["held"], by["fragile"]["failed at"]) == (1, [1, 3])
    assert by["aside"]["primary"] is False and by["aside"]["held"] == 1
    assert "| 03 | KD beats scratch | primary | 3/3 | - | holds | 5.0 |" in md
    assert "| 03 | T = 1 beats T = 20 | primary | 1/3 | 1, 3 | holds | 1.5 |" in md
