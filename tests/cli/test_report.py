"""recur-attn-report on a fake multirun made here: grouping, numbers, Welch's t-test, files."""

import json
import math

import pytest

from recur_attn.cli.report import build_report, default_group_keys, find_runs, main

NLL = {  # test/nll of three trials per cell
    "vanilla": [8.6, 8.7, 8.8],
    "nfg": [9.5, 9.7, 9.6],
    "cifg": [8.65, 8.9, 8.5],
}


def make_run(d, cell, lr, nll, curve=True, seed=0):
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "overrides.yaml").write_text(
        f"- model/cell={cell}\n- model.optimizer.lr={lr}\n- experiment=greff_jsb\n- greff_trial=t0{seed}\n")
    (d / ".hydra" / "config.yaml").write_text("seed: 1\n")
    if nll is not None:
        (d / "metrics.json").write_text(json.dumps({"test/nll": nll, "val/nll": nll - 0.1, "task_name": "x"}))
    if curve:
        (d / "csv" / "version_0").mkdir(parents=True)
        (d / "csv" / "version_0" / "metrics.csv").write_text(
            "epoch,step,train/loss,val/nll\n0,10,12.0,\n0,10,,11.0\n1,20,,%s\n" % (nll or 10.0))


@pytest.fixture
def multirun(tmp_path):
    root = tmp_path / "multirun"
    job = 0
    for cell, vals in NLL.items():
        for v in vals:
            make_run(root / str(job), cell, 10 ** (-3 + 0.1 * job), v, curve=job % 2 == 0, seed=job % 3)
            job += 1
    make_run(root / str(job), "nfg", 0.5, None)  # a failed run: no metrics.json
    return root


def welch(a, b):
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    va = sum((x - ma) ** 2 for x in a) / (len(a) - 1)
    vb = sum((x - mb) ** 2 for x in b) / (len(b) - 1)
    return (ma - mb) / math.sqrt(va / len(a) + vb / len(b))


def test_groups_by_the_repeated_swept_key(multirun):
    runs = find_runs(multirun)
    assert len(runs) == 10
    # the lr is new in every run: a search, not a group; greff_trial repeats but indexes repetitions
    assert default_group_keys(runs) == ["model/cell"]
    assert default_group_keys(runs, replicate_keys=()) == ["model/cell", "greff_trial"]


def test_report_numbers(multirun, tmp_path):
    res = build_report(multirun, top_k=2)
    assert res["metric"] == "test/nll" and res["mode"] == "min" and res["baseline"] == "vanilla"
    assert res["runs"] == 10 and res["failed"] == 1
    t = res["table"].set_index("group")
    assert list(res["table"]["group"]) == ["cifg", "vanilla", "nfg"]  # by mean (8.683, 8.7, 9.6), best first
    assert t.loc["cifg", "best"] == pytest.approx(8.5)
    assert t.loc["cifg", "top2_mean"] == pytest.approx((8.5 + 8.65) / 2)
    assert t.loc["nfg", "mean"] == pytest.approx(9.6)
    assert t.loc["nfg", "trials"] == 3
    assert t.loc["vanilla", "std"] == pytest.approx(0.1)
    assert t.loc["nfg", "t"] == pytest.approx(welch(NLL["nfg"], NLL["vanilla"]))
    assert t.loc["nfg", "p"] < 0.01 and t.loc["nfg", "significant"] == "worse"
    assert t.loc["cifg", "p"] > 0.5 and t.loc["cifg", "significant"] == "no"

    out = multirun / "report"
    md = (out / "report.md").read_text()
    assert "| nfg | 3 | 9.5000 | 9.5500 | 9.6000 |" in md
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2  # box plot and curves, embedded
    assert "nfg" in page and "no metrics.json" in page
    assert (out / "boxplot.png").stat().st_size > 1000 and (out / "curves.png").is_file()
    assert (out / "runs.csv").read_text().count("\n") == 11


def test_explicit_options_and_errors(multirun, tmp_path, capsys):
    main([str(multirun), "--out", str(tmp_path / "r"), "--metric", "val/nll", "--baseline", "cifg",
          "--group-by", "model/cell"])
    printed = capsys.readouterr().out
    assert "Welch's t-test of each group against `cifg`" in printed
    assert (tmp_path / "r" / "report.html").is_file()
    with pytest.raises(ValueError, match="test/bpc"):
        build_report(multirun, metric="test/bpc")
    with pytest.raises(ValueError, match="no runs"):
        build_report(tmp_path / "r")
    bad = multirun / "0" / "metrics.json"
    bad.write_text("{oops")
    with pytest.raises(ValueError, match=r"0/metrics\.json: malformed JSON"):
        build_report(multirun)


def test_paired_test_over_shared_trials(tmp_path):
    """Every cell ran the same trials (hyperparameter draws): the paired t-test over the trials sees a
    consistent 0.1-nat gap that Welch's test, swamped by the spread between trials, does not."""
    from scipy import stats

    root = tmp_path / "multirun"
    base = [8.0, 9.0, 10.0, 11.0]  # trial-to-trial spread >> the gap
    gap = [0.11, 0.09, 0.10, 0.12]
    job = 0
    for cell, vals in (("vanilla", base), ("nfg", [b + d for b, d in zip(base, gap)])):
        for trial, v in enumerate(vals):
            make_run(root / str(job), cell, 0.001, v, seed=trial)
            job += 1
    make_run(root / str(job), "cifg", 0.001, 9.0, seed=9)  # a trial vanilla never ran: no pair
    res = build_report(root)
    t = res["table"].set_index("group")
    assert t.loc["nfg", "significant"] == "no" and t.loc["nfg", "p"] > 0.5
    expect = stats.ttest_rel([b + d for b, d in zip(base, gap)], base)
    assert t.loc["nfg", "pairs"] == 4
    assert t.loc["nfg", "paired_t"] == pytest.approx(expect.statistic)
    assert t.loc["nfg", "paired_p"] == pytest.approx(expect.pvalue) and expect.pvalue < 0.01
    assert t.loc["nfg", "paired"] == "worse"
    assert t.loc["cifg", "pairs"] == 0 and t.loc["cifg", "paired"] == ""
    assert "paired" in (root / "report" / "report.md").read_text()
