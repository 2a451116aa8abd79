"""benchmarks/image_cost.py runs and reports what the README quotes (--quick, 2 threads).

No timing: the figures are the ledger's costs and tokens, which the fake OpenAI server
makes deterministic.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def test_quick_run_prints_per_method_costs_and_the_ratio_as_its_last_line():
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "image_cost.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )

    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["benchmark"] == "image_cost" and result["threads"] == 2
    ours, original = result["ours"], result["original"]
    assert ours["calls_per_answer"] == 1 and original["calls_per_answer"] == 2
    # Same screenshots, same tile pricing: the describe call is what the original adds.
    assert original["image_tokens_per_answer"] >= ours["image_tokens_per_answer"] > 0
    assert original["cost_micros_per_answer"] > ours["cost_micros_per_answer"] > 0
    assert result["ratio_original_over_ours"] == pytest.approx(
        original["cost_micros_per_answer"] / ours["cost_micros_per_answer"], rel=1e-3
    )
    assert result["ratio_at_max_description"] > result["ratio_original_over_ours"] > 1
