"""Smoke test of ``python -m benchmarks``: the machinery runs at tiny sizes.

0.25 s cells, clients 1 and 2, aiodicom (asyncio, uvloop) and pynetdicom, SCP
and SCU side.  About ten processes are started (each imports aiodicom or
pynetdicom, about a second of CPU), so the two sides run side by side in two
threads to keep the wall time down.  No timing assertions: only that every
selected cell produced a row with a positive rate and no failed cycle.
"""

from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import runner

IMPLS = ["aiodicom-asyncio", "aiodicom-uvloop", "pynetdicom"]
CLIENTS = [1, 2]


def _config(side: str, json_path: Path) -> runner.Config:
    return runner.Config(
        clients=CLIENTS,
        duration=0.25,
        warmup=0.05,
        pause=0.05,
        sides=[side],
        impls=set(IMPLS),
        json_path=str(json_path),
    )


def test_benchmark_machinery(tmp_path: Path) -> None:
    pytest.importorskip("pynetdicom")
    pytest.importorskip("uvloop")
    configs = {side: _config(side, tmp_path / f"{side}.json") for side in runner.SIDES}
    with ThreadPoolExecutor(len(configs)) as pool:
        reports = dict(zip(configs, pool.map(runner.run, configs.values())))

    for side, report in reports.items():
        for key in IMPLS:
            for clients in CLIENTS:
                row = report.row(side, key, clients)
                assert row is not None, (side, key, clients)
                assert row.failure is None, (side, key, clients, row.failure)
                assert row.cycles > 0 and row.rate > 0, (side, key, clients)
                assert row.errors_total == 0, (side, key, clients, row.error_samples)
                assert row.p50_ms is not None and row.p99_ms is not None
                # ratios against pynetdicom exist (pynetdicom's own best row is 1.0)
                assert row.vs_pynetdicom is not None, (side, key, clients)

        text = runner.format_report(report)
        assert "vs pynetdicom" in text
        assert ("SCP side" if side == "scp" else "SCU side") in text

        data = json.loads(Path(configs[side].json_path or "").read_text())
        assert len(data["rows"]) == len(IMPLS) * len(CLIENTS)
        assert all(r["runs"] and r["runs"][0]["latencies_ms"] for r in data["rows"])


def test_cli_parser_quick() -> None:
    cfg = runner.config_from_args(runner.build_parser().parse_args(["--quick", "--side", "scp", "-q"]))
    assert cfg.clients == [1, 4] and cfg.duration < 1 and list(cfg.sides) == ["scp"]
    cfg = runner.config_from_args(runner.build_parser().parse_args(["--clients", "1,64", "--duration", "2", "-q"]))
    assert cfg.clients == [1, 64] and cfg.duration == 2.0 and cfg.impls is None
