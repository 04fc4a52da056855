"""The HTML viewer, in a real headless browser (Debian's chromium, driven by Playwright)."""

from __future__ import annotations

import colorsys
import json
import re
import shutil
from pathlib import Path

import pytest

from lm_eval_noise.cli import main
from lm_eval_noise.tools.viz import collect_rows, worst

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
STAMP = "2026-11-21T10-00-00.000000"


def expected_rgb(logprob: float) -> tuple[int, ...]:
    """The page's colour scale, computed independently: hue 120 (green) at log-prob 0 to
    0 (red) at -10 and below, saturation 70%, lightness 82%."""
    hue = round(120 * (1 - min(max(-logprob / 10, 0), 1)))
    return tuple(round(255 * c) for c in colorsys.hls_to_rgb(hue / 360, 0.82, 0.70))


def rgb(css: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", css))


def write_run(folder: Path, sigma: float, logprob_offset: float, answers: int, **noise_fields):
    """A run's results JSON and samples file, shaped as lm-eval writes them, with score
    records (as lmsys_chat_noise leaves them) in filtered_resps."""
    folder.mkdir(parents=True)
    noise = {"active": True, "sigma_scale": sigma, "noise_norm": None, "site": "layer:1", "scope": "per_sequence",
             "positions": "all", "sigma_mode": "norm", "seed": 0, **noise_fields}
    (folder / f"results_{STAMP}.json").write_text(json.dumps({"config": {"model": "hf-noise", "noise": noise}}))
    with (folder / f"samples_lmsys_chat_noise_{STAMP}.jsonl").open("w") as handle:
        for doc_id in range(answers):
            # Hostile text: markup, and `<!--<script>`, which puts a script's text in the
            # HTML parser's double-escaped state unless the page escapes every `<`.
            logprobs = [-0.5, logprob_offset - doc_id, -1.0, -1.0]
            record = {"response": "a <b>c<!--<script>", "tokens": ["a", " <b>", "c", "<!--<script>"],
                      "token_logprobs": logprobs}
            handle.write(json.dumps({
                "doc_id": doc_id,
                "arguments": {"gen_args_0": {"arg_0": f"user: question {doc_id}<!--<script></script>"}},
                "resps": [["a <b>c"]], "filtered_resps": [[json.dumps(record)]],
            }) + "\n")


@pytest.fixture
def runs(tmp_path):
    write_run(tmp_path / "small", 0.1, -1.0, 8)
    write_run(tmp_path / "large", 0.5, -6.0, 8)
    return sorted(tmp_path.rglob("samples_*.jsonl"))


def test_runs_that_differ_in_any_setting_never_merge(tmp_path):
    write_run(tmp_path / "isotropic", 0.5, -1.0, 5)
    write_run(tmp_path / "shaped", 0.5, -1.0, 5, cov_sqrt="cov/cov_sqrt.npy")
    write_run(tmp_path / "repeat", 0.5, -1.0, 5)  # the same settings as isotropic, another run
    rows = collect_rows(sorted(tmp_path.rglob("samples_*.jsonl")), [])
    runs = {row["run"] for row in rows}
    assert len(runs) == 3
    assert any("cov_sqrt=cov/cov_sqrt.npy" in run for run in runs)
    assert len(worst(rows, top_n=2)) == 6  # top-n is per run: two of each


def test_rows_are_the_worst_per_run_sorted_by_mean_logprob(runs):
    rows = collect_rows(runs, [])
    assert len(rows) == 16
    chosen = worst(rows, top_n=6)
    assert len(chosen) == 12
    assert [r["mean"] for r in chosen] == sorted(r["mean"] for r in chosen)
    assert {r["scale"] for r in chosen} == {"sigma_scale=0.1", "sigma_scale=0.5"}


def test_viz_refuses_inputs_without_scores(tmp_path, capsys):
    path = tmp_path / "samples_x_1.jsonl"
    path.write_text(json.dumps({"doc_id": 0, "arguments": {"gen_args_0": {"arg_0": "p"}},
                                "resps": [["r"]], "filtered_resps": ["r"]}) + "\n")
    assert main(["viz", "--samples", str(path), "-o", str(tmp_path)]) == 2
    assert "no scored answers" in capsys.readouterr().err


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium installed (.ci/run installs it)")
def test_page_in_a_headless_browser(runs, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    page_file = tmp_path / "viz.html"
    assert main(["viz", "--samples", *map(str, runs), "--top-n", "7", "-o", str(tmp_path)]) == 0
    html = page_file.read_text()
    assert "http://" not in html and "https://" not in html  # self-contained
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"],
        )
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(page_file.as_uri())
        assert page.locator("#count").inner_text() == "14 answers"
        means = [float(x) for x in page.locator(".row").evaluate_all("rows => rows.map(r => r.dataset.mean)")]
        assert len(means) == 10 and means == sorted(means)
        tokens = page.locator(".row").first.locator(".tok")
        assert tokens.nth(1).get_attribute("title") == "-13.000"
        for index, logprob in ((0, -0.5), (1, -13.0), (2, -1.0)):
            shown = rgb(tokens.nth(index).evaluate("e => getComputedStyle(e).backgroundColor"))
            assert all(abs(a - b) <= 1 for a, b in zip(shown, expected_rgb(logprob))), (logprob, shown)
        assert page.locator(".row").first.locator(".tok").nth(1).inner_text() == " <b>"  # text, not markup
        assert "<!--<script></script>" in page.locator(".prompt").first.inner_text()
        assert page.locator(".row").first.locator(".tok").nth(3).inner_text() == "<!--<script>"
        assert "noise.site=layer:1" in page.locator(".run").first.get_attribute("title")  # full settings on hover
        page.screenshot(path=str(tmp_path / "page1.png"), full_page=True)
        page.click("#next")
        assert page.locator("#page").inner_text() == "page 2 of 2" and page.locator(".row").count() == 4
        page.select_option("#scale", "sigma_scale=0.1")
        assert page.locator("#count").inner_text() == "7 answers"
        assert page.locator("#page").inner_text() == "page 1 of 1"
        page.select_option("#scale", "")
        page.select_option("#run", page.locator("#run option").nth(1).get_attribute("value"))
        assert page.locator("#count").inner_text() == "7 answers"
        page.screenshot(path=str(tmp_path / "filtered.png"))
        browser.close()
    assert (tmp_path / "page1.png").stat().st_size > 10_000
