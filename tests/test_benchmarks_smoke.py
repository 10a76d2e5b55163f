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

from benchmarks import null_scp, runner

IMPLS = ["aiodicom-asyncio", "aiodicom-uvloop", "pynetdicom"]
#: the multi-process server and the ceiling rows (the C one where there is
#: a C compiler to build it) exist on the SCP side only
CEILING = ["ceiling-python", *(["ceiling"] if null_scp.compiler() else [])]
SIDE_IMPLS = {"scp": [*IMPLS, "aiodicom-workers", *CEILING], "scu": IMPLS}
CLIENTS = [1, 2]
#: the SCP side's load generator: the C one (benchmarks/cycle_client.c) where
#: it can be built; tests/test_raw_client.py runs the Python one through the runner
GENERATOR = "c" if null_scp.compiler() else "python"


def _config(side: str, json_path: Path) -> runner.Config:
    return runner.Config(
        clients=CLIENTS,
        duration=0.25,
        warmup=0.05,
        pause=0.05,
        sides=[side],
        impls=set(SIDE_IMPLS[side]),
        json_path=str(json_path),
        generator=GENERATOR,
    )


def test_benchmark_machinery(tmp_path: Path) -> None:
    pytest.importorskip("pynetdicom")
    pytest.importorskip("uvloop")
    configs = {side: _config(side, tmp_path / f"{side}.json") for side in runner.SIDES}
    with ThreadPoolExecutor(len(configs)) as pool:
        reports = dict(zip(configs, pool.map(runner.run, configs.values())))

    for side, report in reports.items():
        for key in SIDE_IMPLS[side]:
            for clients in CLIENTS:
                row = report.row(side, key, clients)
                assert row is not None, (side, key, clients)
                assert row.failure is None, (side, key, clients, row.failure)
                assert row.cycles > 0 and row.rate > 0, (side, key, clients)
                assert row.errors_total == 0, (side, key, clients, row.error_samples)
                assert row.p50_ms is not None and row.p99_ms is not None
                # ratios against pynetdicom exist (pynetdicom's own best row is 1.0)
                assert row.vs_pynetdicom is not None, (side, key, clients)
                # the server's CPU is sampled whole, its worker processes included
                assert row.cpu_us_tested is not None and row.cpu_us_tested > 0, (side, key, clients)
                # every real server's rate is also given as a share of the ceiling
                if side == "scp" and key not in CEILING:
                    assert row.of_ceiling is not None and row.of_ceiling > 0, (key, clients)

        text = runner.format_report(report)
        assert "vs pynetdicom" in text
        assert ("SCP side" if side == "scp" else "SCU side") in text

        data = json.loads(Path(configs[side].json_path or "").read_text())
        assert len(data["rows"]) == len(SIDE_IMPLS[side]) * len(CLIENTS)
        assert all(r["runs"] and r["runs"][0]["latencies_ms"] for r in data["rows"])
        assert data["meta"]["config"]["generator"] == GENERATOR
        if side == "scp":  # the results came from the chosen generator
            expected = {"c": "c", "python": "raw"}[GENERATOR]
            assert {run["loadgen"] for r in data["rows"] for run in r["runs"]} == {expected}
            assert runner.side_title("scp", GENERATOR) in text


def test_cli_parser_quick() -> None:
    cfg = runner.config_from_args(runner.build_parser().parse_args(["--quick", "--side", "scp", "-q"]))
    assert cfg.clients == [1, 4] and cfg.duration < 1 and list(cfg.sides) == ["scp"]
    cfg = runner.config_from_args(runner.build_parser().parse_args(["--clients", "1,64", "--duration", "2", "-q"]))
    assert cfg.clients == [1, 64] and cfg.duration == 2.0 and cfg.impls is None


def test_data_benchmarks_tiny(tmp_path: Path) -> None:
    """The store/find/get data suites at tiny sizes (aiodicom and pynetdicom SCPs)."""
    pytest.importorskip("pynetdicom")
    pytest.importorskip("uvloop")
    from benchmarks import data_suite

    cfg = data_suite.DataConfig(
        suites=list(data_suite.DATA_SUITES),
        store_sizes_kib=[8],
        store_clients=[2],
        find_matches=50,
        find_clients=[1],
        get_instances=4,
        get_size_kib=8,
        get_clients=[1],
        duration=0.3,
        warmup=0.05,
        raw_tcp=False,
        impls={"aiodicom-uvloop", "pynetdicom"},
        json_path=str(tmp_path / "data.json"),
    )
    report = data_suite.run_data(cfg)
    rows = report["rows"]
    assert {(r["suite"], r["key"]) for r in rows} == {
        (s, k) for s in data_suite.DATA_SUITES for k in ("aiodicom-uvloop", "pynetdicom")
    }
    for r in rows:
        assert r["failure"] is None, r
        assert r["errors"] == 0, r
        assert r["items"] > 0, r
        if r["suite"] in ("store", "get"):
            assert r["mb_per_s"] > 0, r
        assert r["vs_pynetdicom"] is not None, r
    text = data_suite.format_data_report(report)
    assert "C-STORE" in text and "C-FIND" in text and "C-GET" in text
    assert json.loads((tmp_path / "data.json").read_text())["rows"]


def test_raw_tcp_and_suite_parsing() -> None:
    from benchmarks import rawtcp

    res = rawtcp.measure(0.2, block=1 << 20, warmup=0.05)
    assert res["mb_per_s"] and res["mb_per_s"] > 0
    assert runner._suites("cycles") == ["cycles"]
    assert runner._suites("data") == ["store", "find", "get"]
    assert runner.build_parser().parse_args([]).suite == "cycles"  # the default run is unchanged


def test_hold_and_scaling_tiny(tmp_path: Path) -> None:
    """The hold and scaling benchmarks at tiny sizes: rows, counts, JSON and text."""
    pytest.importorskip("uvloop")
    from benchmarks import hold, scaling

    rows = hold.run_hold(40, 5, {"aiodicom"}, 16)
    (row,) = rows
    assert row.get("failure") is None, row
    assert row["held"] == row["answered"] == 40 and row["errors"] == 0
    assert row["rss_base_kib"] and row["rss_full_kib"] and row["rss_per_assoc_kib"] is not None
    assert "KiB/assoc" in hold.format_hold(rows)

    srows = scaling.run_scaling(["aiodicom-uvloop"], [1, 3], 0.05, 0.25)
    assert [r["assocs"] for r in srows] == [1, 3]
    for r in srows:
        assert r.get("failure") is None, r
        assert r["opened"] == r["assocs"] and r["echoes"] > 0 and r["errors"] == 0
        assert r["p50_ms"] > 0 and r["p99_ms"] >= r["p50_ms"]
    text = scaling.format_scaling(srows)
    assert "vs N=1" in text and "aiodicom-uvloop" in text
    png = tmp_path / "s.png"
    if scaling.save_plot(srows, str(png)):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_runner_suites_include_hold_and_scaling() -> None:
    assert runner._suites("all")[-3:] == ["hold", "scaling", "archive"]
    assert runner._suites("archive") == ["archive"]
    assert runner._suites("hold,cycles") == ["hold", "cycles"]
    with pytest.raises(SystemExit):
        runner._suites("bogus")


def test_archive_suite_tiny(tmp_path: Path) -> None:
    """The archive benchmark at tiny sizes, aiodicom rows only (peers skipped)."""
    pytest.importorskip("uvloop")
    from benchmarks import archive_suite

    cfg = archive_suite.ArchiveConfig(
        store_sizes_kib=[40], store_clients=[1, 2], instances=200, duration=0.4, warmup=0.1,
        impls={"aiodicom", "aiodicom-nofsync"},
    )
    report = archive_suite.run_archive(cfg)
    store = report["store"]
    assert {(r["key"], r["clients"]) for r in store} == {
        ("aiodicom", 1), ("aiodicom", 2), ("aiodicom-nofsync", 1), ("aiodicom-nofsync", 2)
    }
    for r in store:
        assert r["failure"] is None, r
        assert r["ops_per_s"] > 0 and r["mb_per_s"] > 0 and r["errors"] == 0, r
    find = report["find"]
    assert [r["query"] for r in find] == ["study-by-pid", "study-date-range", "image-one-series"]
    for r in find:
        assert r["failure"] is None, r
        assert r["instances"] == 200 and r["queries_per_s"] > 0 and r["errors"] == 0, r
        assert r["matches"] and r["matches"] >= 1, r
    assert find[0]["matches"] == archive_suite.STUDIES_PER_PATIENT
    assert find[2]["matches"] == archive_suite.IMAGES_PER_SERIES
    text = archive_suite.format_archive_report(report)
    assert "C-STORE into the archive" in text and "C-FIND over an indexed archive" in text
    json.dumps(report)


def test_data_repeats_show_the_median_run_and_the_range() -> None:
    from benchmarks import data_suite

    def run(mb: float, failure: str | None = None) -> data_suite.DataRow:
        return data_suite.DataRow("store", "aiodicom-uvloop", "aiodicom", "aiodicom", 512, 1,
                                  ops_per_s=mb, items_per_s=mb, mb_per_s=mb, failure=failure)

    row = data_suite.median_row([run(10.0), run(30.0), run(20.0)])
    assert row.mb_per_s == 20.0 and row.runs == [10.0, 30.0, 20.0]
    # a failed run ranks lowest; with an even count the lower middle run is shown
    row = data_suite.median_row([run(10.0), run(0.0, failure="server exited"), run(40.0), run(30.0)])
    assert row.mb_per_s == 10.0 and row.failure is None and row.runs == [10.0, 0.0, 40.0, 30.0]

    from dataclasses import asdict

    report = {
        "meta": {"loadavg_start": [0.1], "loadavg_end": [0.1], "cpus": 2,
                 "config": {"duration": 1.0, "warmup": 0.1, "repeat": 3, "find_matches": 1,
                            "get_instances": 1, "get_size_kib": 1}},
        "raw_tcp": None,
        "rows": [asdict(data_suite.median_row([run(10.0), run(30.0), run(20.0)]))],
    }
    text = data_suite.format_data_report(report)
    assert "3 runs per cell" in text and "range of 3 runs" in text
    assert "10-30" in text.replace(" ", "")


def test_inproc_server_side_cycles() -> None:
    """``benchmarks.inproc --side scp`` feeds a server the generator's bytes and checks its replies."""
    import asyncio

    import aiodicom
    from benchmarks import inproc

    res = asyncio.run(inproc.server_cycles(20))
    assert res["cycles"] == 20 and res["errors"] == 0 and res["cpu_s"] > 0

    async def rejecting() -> dict[str, float]:  # a server that refuses the called AE title
        return await inproc.server_cycles(5, aiodicom.Server("SOMEONE-ELSE", strict_called_ae=True))

    assert asyncio.run(rejecting())["errors"] == 5
