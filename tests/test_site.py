"""The course's website (make site): staged from executed notebooks, built by Sphinx, checked in Chromium.

The real site is built from make check's full run and checked in CI by `make site site-check`; these
tests prove the parts (results page, header cells, links, secrets), that the browser check catches
each defect it claims to, and that a site built here from the course's notebooks passes it.
"""
import base64
import io
import json
import os
import shutil

import nbformat
import pytest

from kdutils import report, runtime
from kdutils.course import colab, layout, otterformat, site, sitecheck, syllabus

ROOT = runtime.repo_root()
NOTEBOOKS = layout.course_notebooks(ROOT / "notebooks")


def _browser_or_skip():
    try:
        sitecheck.chromium()
        import playwright  # noqa: F401
    except (sitecheck.BrowserUnavailable, ImportError) as exc:
        if os.environ.get("CI"):        # CI's make installs Chromium: its absence there is a failure
            raise
        pytest.skip(str(exc))


def test_results_page_renders_scalars_records_and_the_run(tmp_path):
    report.save_results("01_a", {"accuracy": 0.912345, "tiny": 1e-5, "nested": {"gap": -0.25},
                                 "table": [{"index": 0, "arm": "kd", "acc": 0.9}, {"index": 1, "arm": "scratch", "acc": 0.8}],
                                 "curve": list(range(20)), "matrix": [[1, 2, 3], [4, 5, 6]], "note": "a | b"}, directory=tmp_path)
    page = site.results_page(tmp_path, ["01_a", "02_b"])
    info = runtime.describe()
    assert f"Profile **{info['profile']}**, seed **{info['seed']}**, device **{info['device']}**" in page
    for row in ("| accuracy | 0.9123 |", "| tiny | 1.000e-05 |", "| nested.gap | -0.25 |", "| note | a \\| b |",
                "| arm | acc |", "| kd | 0.9 |", "| scratch | 0.8 |", "(20 values)",
                "| matrix | a 2 × 3 table of values (in the JSON file) |", "[01_a](notebooks/01_a.ipynb)"):
        assert row in page, row
    assert "| index |" not in page, "pandas' index column is left out"
    assert page.split("## 02_b")[1].strip().startswith("This notebook saves no results file")
    with pytest.raises(site.SiteError, match="no results files"):
        site.results_page(tmp_path / "empty", ["01_a"])


def test_results_page_lists_the_primary_claims_not_the_secondary(tmp_path, monkeypatch):
    monkeypatch.setenv("KD_CLAIMS", "record")
    claims = report.Claims("03_c", directory=tmp_path)
    claims.check("big", True, "KD beats scratch")
    claims.check("small", False, "T = 1 beats T = 20 everywhere")
    claims.secondary("aside", True, "an aside of this run")
    report.save_results("03_c", {"accuracy": 0.9}, directory=tmp_path)
    page = site.results_page(tmp_path, ["03_c"])
    assert "| KD beats scratch | yes |" in page and "| T = 1 beats T = 20 everywhere | NO |" in page
    assert "an aside of this run" not in page


def _executed(tmp_path, name="03_x.ipynb", **run):
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell(f"# 03 · A title\n\n[![Open In Colab]({site.COLAB_BADGE})](https://colab.research.google.com/github/o/n/blob/main/notebooks/{name})"),
        nbformat.v4.new_code_cell("for _ in tqdm(range(3)): pass\nshow_map()"),
    ]
    nb.cells[1].outputs = [
        nbformat.v4.new_output("display_data", data={site.WIDGET_MIME: {"model_id": "abc", "version_major": 2},
                                                     "text/plain": "HBox(children=...)"}),
        nbformat.v4.new_output("stream", name="stdout", text="trained\n"),
        nbformat.v4.new_output("display_data", data={"text/markdown": "[next](04_y.ipynb) · [web](https://e.org/a.ipynb)"}),
    ]
    nb.metadata["widgets"] = {"state": {}}
    if run:
        nb.metadata["kdutils"] = run
    path = tmp_path / "run" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def test_staged_notebook_names_its_run_links_its_notebook_and_loads_nothing_from_elsewhere(tmp_path):
    run = dict(profile="full", seed=0, device="cuda:0", gpu="NVIDIA H200", torch="2.14.1", executed_at="2026-11-30T04:00:00",
               seconds=61.2, status="ok")
    executed = _executed(tmp_path, **run)
    src = tmp_path / "src"
    staged = nbformat.read(site.stage_notebook(executed, executed, src, "notebooks/03_x.ipynb", results=None), as_version=4)
    header = staged.cells[1].source
    assert staged.cells[0].source.startswith("# 03 · A title"), "the title stays first"
    for words in ("profile **full**", "seed **0**", "device **cuda:0 (NVIDIA H200)**", "run on 2026-11-30 04:00:00 in 61 s",
                  "{download}`download the notebook <../downloads/notebooks/03_x.ipynb>`"):
        assert words in header, words
    assert (src / "downloads" / "notebooks" / "03_x.ipynb").is_file()
    outputs = staged.cells[2].outputs
    assert [o.output_type for o in outputs] == ["stream", "display_data"], "the progress bar (a widget) is left out"
    assert "widgets" not in staged.metadata
    assert outputs[1].data["text/markdown"] == "[next](04_y.html) · [web](https://e.org/a.ipynb)"
    assert "(../images/colab-badge.svg)" in staged.cells[0].source and site.COLAB_BADGE not in staged.cells[0].source

    failed = _executed(tmp_path, name="05_z.ipynb", **{**run, "status": "FAILED"})
    text = nbformat.read(site.stage_notebook(failed, failed, src, "notebooks/05_z.ipynb", results=None), as_version=4).cells[1].source
    assert "the run FAILED" in text
    bare = _executed(tmp_path, name="06_w.ipynb")
    results = {"profile": "smoke", "seed": 3, "device": "cpu", "torch": "2.14.1", "saved_at": "2026-11-29T10:00:00"}
    text = nbformat.read(site.stage_notebook(bare, bare, src, "notebooks/06_w.ipynb", results=results), as_version=4).cells[1].source
    assert "profile **smoke**, seed **3**" in text, "a run not recorded in the notebook: its results file says"
    text = nbformat.read(site.stage_notebook(bare, bare, src, "notebooks/06_w.ipynb", results=None), as_version=4).cells[1].source
    assert "was not recorded" in text


def test_landing_page_is_the_readme_map_and_commands():
    page = site.landing_page((ROOT / "README.md").read_text())
    assert page.startswith("# Knowledge distillation")
    for section in site.README_SECTIONS:
        assert f"## {section}" in page
    for nb in NOTEBOOKS:
        assert f"[{nb.name}](notebooks/{nb.name})" in page, nb.name
    assert "make run" in page and "make test" in page and "[results](results.md)" in page
    with pytest.raises(site.SiteError, match="On Colab"):
        site.landing_page("# T\n\n## Two commands\n\nx\n\n## The notebooks\n\ny\n")


def test_secret_lines_are_solutions_and_hidden_tests_never_prompts():
    secrets = sitecheck.secret_lines()
    a5 = "return ((mapped - teacher_map.detach()) ** 2).mean()"                        # a5 q1's solution
    hidden = 'assert t.grad is None, "the teacher\'s features received a gradient: teacher_map must be detached"'
    assert a5 in secrets and hidden in secrets
    for visible in ("def hint_term(student_map, teacher_map, regressor):", "_r = nn.Conv1d(3, 5, 1)",
                    otterformat.PLACEHOLDERS[0]):
        assert visible not in secrets, visible
    # a6 writes its fixes with otter's NO PROMPT markers and shows the buggy line (a PROMPT block) instead
    for fix in ("n_tokens = sum(mask.sum() for _, _, mask in micro_batches)", 'tau = cfg["kd_temperature"]',
                "log_m = torch.logsumexp(torch.stack([log_p_t + math.log(beta), log_p_s + math.log(1 - beta)]), dim=0)"):
        assert fix in secrets, fix
    for shown in ("loss = (per_token * mask).sum() / mask.sum() / len(micro_batches)", 'tau = cfg["sampling_temperature"]',
                  "log_m = beta * log_p_t + (1 - beta) * log_p_s"):
        assert shown not in secrets, shown


@pytest.mark.slow
def test_student_versions_hold_no_secret(tmp_path):
    secrets = sitecheck.secret_lines()
    for name, student in site.student_versions(["a1_kd_losses", "a5_feature_distillation"], tmp_path).items():
        text = sitecheck._notebook_text(student)
        assert not sitecheck._lines(text) & secrets, name
        assert "grader.check" in text or "otter" in text


FAKE_PAGE = """<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title></head>
<body><main id="top">{body}</main></body></html>"""


@pytest.mark.slow
def test_browser_check_catches_each_defect(tmp_path):
    _browser_or_skip()
    (tmp_path / "index.html").write_text(FAKE_PAGE.format(title="clean", body=(
        '<p>Prices in code are fine: <code>$HOME and $5</code></p><pre>cost = $3 + $4</pre>'
        '<a href="other.html#here">a good link</a> <a href="#top">up</a> <a href="https://example.org/">out</a>')))
    (tmp_path / "other.html").write_text(FAKE_PAGE.format(title="defects", body=(
        '<p id="here">the loss is $L = T^2 KL$ here</p><p>Other words come in between, many of them.</p>'
        '<p>a sum $ <span class="math">x</span> $ half-rendered</p>'
        '<img src="missing.png"><img src="https://cdn.example.org/x.png">'
        '<a href="gone.html">a broken link</a> <a href="index.html#nowhere">a broken anchor</a>'
        '<script>console.error("boom")</script>'
        '<pre>    return ((mapped - teacher_map.detach()) ** 2).mean()</pre>')))
    (tmp_path / "keys.html").write_text(FAKE_PAGE.format(title="accessibility defects", body=(
        '<style>a:focus { outline: none; } html[data-theme=dark] .dk { color: #111; background: #000; }</style>'
        f'<div class="cell_output"><img src="data:image/png;base64,{_png()}" alt="../_images/60156c95e1b2c3d4.png"></div>'
        f'<div class="cell_output"><img src="data:image/png;base64,{_png()}" alt="figure 1"></div>'
        '<p style="color: #bbb; background: #fff">faint words</p><p class="dk">words only the dark theme hides</p>'
        + " ".join(f'<a href="#top">link {i}</a>' for i in range(6)))))
    problems, pages = sitecheck.check_site(tmp_path, shots=tmp_path / "shots", walk="keys.html",
                                           secrets={"return ((mapped - teacher_map.detach()) ** 2).mean()"})
    assert pages == ["index.html", "keys.html", "other.html"]
    assert not [p for p in problems if p.startswith("index.html")], problems
    text = "\n".join(problems)
    for words in ("math left raw (a TeX delimiter in the text): 'the loss is $L = T^2 KL$", "sum $ x $ half-rendered",
                  "image did not load: missing.png", "HTTP 404 for",
                  "loads https://cdn.example.org/x.png from outside the site", "console error: boom",
                  "broken link to /gone.html", "broken link to index.html#nowhere (no such anchor)",
                  "shows a line of an assignment's solution or hidden tests",
                  # accessibility, each defect by its rule and page
                  "other.html: accessibility: image-alt (critical)",
                  "keys.html: a figure whose text alternative is a file name",
                  "keys.html: a figure whose text alternative is too short to say what it shows: 'figure 1'",
                  "keys.html: accessibility: color-contrast (serious)",
                  "keys.html: dark theme: accessibility: color-contrast (serious)",
                  "keys.html: keyboard: focus on <a> 'link 0' shows no visible focus indicator"):
        assert words in text, (words, problems)
    assert "index.html: dark theme" not in text and "other.html: keyboard" not in text
    light, dark = (next(p for p in problems if p.startswith(f"keys.html: {t}accessibility: color-contrast")) for t in ("", "dark theme: "))
    assert "1 element(s)" in light and "2 element(s)" in dark and "words only the dark theme hides" in dark
    assert sorted(p.name for p in (tmp_path / "shots").iterdir()) == ["accessibility.json", "index.png", "keys.png", "other.png"]
    a11y = json.loads((tmp_path / "shots" / "accessibility.json").read_text())
    assert a11y["pages"]["index.html"]["light"] == [] and a11y["violations"] >= 4
    assert a11y["keyboard"]["page"] == "keys.html" and len(a11y["keyboard"]["stops"]) >= 6


def _png() -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.plot([0, 1], [1, 0])
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


@pytest.mark.slow
def test_site_builds_from_a_run_and_passes_the_browser_check(tmp_path):
    """The course's own notebooks staged as a run (one with a figure and math in an output), every assignment."""
    _browser_or_skip()
    run = tmp_path / "run"
    (run / "notebooks").mkdir(parents=True)
    for nb_path in NOTEBOOKS:
        nb = nbformat.read(nb_path, as_version=4)
        nb.metadata["kdutils"] = dict(profile="smoke", seed=0, device="cpu", torch="test", executed_at="2026-11-30T04:00:00",
                                      seconds=1.0, status="ok")
        if nb_path.name.startswith("03"):     # a plotting cell: its text alternative goes with its figure
            code = next(c for c in nb.cells if c.cell_type == "code" and "plt." in c.source)
            code.outputs = [nbformat.v4.new_output("display_data", data={"image/png": _png(), "text/plain": "<Figure>"}),
                            nbformat.v4.new_output("display_data", data={"text/latex": r"$\mathrm{KL}(p \| q) = 0.25$"})]
        nbformat.write(nb, run / "notebooks" / nb_path.name)
    report.save_results("03_first_distillation", {"accuracy": 0.9}, directory=run / "results")
    plotting = [p.name for p in NOTEBOOKS if "plt." in p.read_text()]
    with pytest.raises(site.SiteError, match="hold no figure"):      # the stored notebooks carry no figures
        site.build_site(run, tmp_path / "site")
    built = site.build_site(run, tmp_path / "site", require_figures=False)
    assert built["without_figures"] == [n for n in plotting if not n.startswith("03")]
    out = built["out"]
    assert built["pages"] == [f"notebooks/{p.stem}.html" for p in NOTEBOOKS] + \
        [f"notebooks/assignments/{a}/{a}.html" for a in layout.list_assignments()]
    assert not built["warnings"], built["warnings"]
    for page in built["pages"] + ["index.html", "results.html", "search.html", "_static/mathjax/tex-chtml.js"]:
        assert (out / page).is_file(), page
    html = (out / "notebooks" / "03_first_distillation.html").read_text()
    assert "profile <strong>smoke</strong>" in html and "_downloads/" in html and "<img" in html
    assert 'alt="Ten small panels, one per digit class of MNIST-1D' in html, "the figure's text alternative"
    assert "Set-up (installs the course on Colab; nothing elsewhere): show the code" in html, "the set-up cell is folded"
    syllabus_html = (out / "syllabus.html").read_text()
    assert "profile <strong>smoke</strong>" in syllabus_html and "a7 q1-q4" in syllabus_html

    # axe-core on a page of each kind (the browser-check stage of make check runs it on every page of the real site)
    axe_pages = {"index.html", "notebooks/03_first_distillation.html", "notebooks/assignments/a7_speculative_decoding/"
                 "a7_speculative_decoding.html", "syllabus.html", "results.html", "search.html"}
    problems, pages = sitecheck.check_site(out, shots=tmp_path / "shots", axe_pages=axe_pages)
    assert not problems, problems
    a11y = json.loads((tmp_path / "shots" / "accessibility.json").read_text())
    assert {p for p, r in a11y["pages"].items() if not r.get("skipped")} == axe_pages
    assert a11y["violations"] == 0 and a11y["keyboard"]["page"] == "index.html"
    assert any(s["inMain"] for s in a11y["keyboard"]["stops"]), "Tab reaches the landing page's content"
    nb_page = " ".join((out / "notebooks" / "04_feature_distillation.html").read_text().split())
    assert 'class="left-prev" href="03_first_distillation.html"' in nb_page, "previous / next links, in course order"
    assert 'class="right-next" href="05_wrong_dataset_pitfall.html"' in nb_page
    assert set(built["pages"]) <= set(pages) and {"index.html", "results.html", "search.html", "syllabus.html"} <= set(pages)
    assert len(list((tmp_path / "shots").glob("*.png"))) == len(pages)

    # a solution that reached a page is caught there
    student = out / "notebooks" / "assignments" / "a5_feature_distillation" / "a5_feature_distillation.html"
    student.write_text(student.read_text().replace("</main>", "<pre>    return ((mapped - teacher_map.detach()) ** 2).mean()</pre></main>"))
    problems, _ = sitecheck.check_site(out, pages=[student.relative_to(out).as_posix(), "search.html"],
                                       search_word="zzyzx-not-in-the-course")
    assert any("solution or hidden tests" in p for p in problems), problems
    assert "search.html: searching 'zzyzx-not-in-the-course' finds no page" in problems


def test_site_refuses_a_run_that_lacks_notebooks(tmp_path):
    (tmp_path / "notebooks").mkdir()
    shutil.copy(NOTEBOOKS[0], tmp_path / "notebooks")
    assert site.missing_notebooks(tmp_path, ROOT / "notebooks") == [p.name for p in NOTEBOOKS[1:]]
    with pytest.raises(site.SiteError, match="run `make run` first"):
        site.build_site(tmp_path, tmp_path / "site")
    with pytest.raises(FileNotFoundError, match="build the site first"):
        sitecheck.check_site(tmp_path / "nowhere")
    assert len(site.missing_notebooks(tmp_path / "nothing", ROOT / "notebooks")) == len(NOTEBOOKS)


def test_github_pages_workflow_builds_checks_and_deploys_the_site():
    import yaml

    flow = yaml.safe_load((ROOT / ".github" / "workflows" / "site.yml").read_text())
    assert flow[True]["push"]["branches"] == ["main"], "built on every push to main"    # YAML reads `on:` as True
    steps = flow["jobs"]["build"]["steps"]
    runs = [s.get("run", "") for s in steps]
    order = [next(i for i, r in enumerate(runs) if r.startswith(cmd)) for cmd in ("make run", "make site", "make site-check")]
    assert order == sorted(order), "make run, then make site, then make site-check"
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-pages-artifact"))
    assert upload["with"]["path"] == "build/site"
    assert any(s.get("uses", "").startswith("actions/deploy-pages") for s in flow["jobs"]["deploy"]["steps"])
    assert flow["permissions"]["pages"] == "write" and flow["permissions"]["id-token"] == "write"
    assert ".github/workflows/site.yml" in (ROOT / "README.md").read_text()


def _plotting_cells(path):
    return [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code" and "plt." in c.source]


def test_every_figure_in_the_course_says_what_it_shows():
    """Each plotting cell carries a text alternative (mystnb.image.alt, the page's <img alt>) that describes its figure."""
    assert sum(len(_plotting_cells(p)) for p in NOTEBOOKS) >= 25
    for path in NOTEBOOKS:
        alts = []
        for cell in _plotting_cells(path):
            alt = cell.metadata.get("mystnb", {}).get("image", {}).get("alt")
            assert sitecheck.figure_alt_problem(alt) is None, (path.name, cell.get("id"), sitecheck.figure_alt_problem(alt))
            assert len(alt) >= 80 and not alt.lower().startswith(("figure", "plot of the figure")), (path.name, alt)
            alts.append(alt)
        assert len(set(alts)) == len(alts), f"{path.name}: two figures with the same description"


@pytest.mark.parametrize("alt, bad", [(None, "without a text alternative"), ("  ", "without a text alternative"),
                                      ("../_images/60156c95e1b2c3d4.png", "a file name"), ("plot.png", "a file name"),
                                      ("figure 1", "too short"), ("A line plot of accuracy against the step for each arm.", None)])
def test_figure_alt_problem_names_each_defect(alt, bad):
    got = sitecheck.figure_alt_problem(alt)
    assert (got is None) if bad is None else (bad in got)


def test_syllabus_from_each_notebooks_entry_and_the_runs_own_times(tmp_path):
    (tmp_path / "notebooks").mkdir()
    for i, path in enumerate(NOTEBOOKS):
        nb = nbformat.read(path, as_version=4)
        nb.metadata["kdutils"] = {"profile": "full", "seconds": 30.0 + 60 * i, "status": "ok"}
        if i != 1:                                    # the run lacks one notebook: its time says so
            nbformat.write(nb, tmp_path / "notebooks" / path.name)
    page = syllabus.syllabus_page(NOTEBOOKS, tmp_path)
    assert "profile **full**" in page and "| 30 s |" in page and "| 2.5 min |" in page and "| not recorded |" in page
    for path in NOTEBOOKS:
        meta = syllabus.entry(nbformat.read(path, as_version=4), path.name)
        assert f"[{path.stem}](notebooks/{path.stem}.ipynb)" in page and all(o in page for o in meta["objectives"])
    graded = " ".join(" ".join(syllabus.entry(nbformat.read(p, as_version=4), p.name)["graded_by"]) for p in NOTEBOOKS)
    for name in layout.list_assignments():       # every assignment grades some notebook
        assert name.split("_")[0] + " q" in graded, name
    broken = nbformat.read(NOTEBOOKS[2], as_version=4)
    broken.metadata["syllabus"]["objectives"] = ["only one"]
    with pytest.raises(syllabus.SyllabusError, match="3 to 5 learning objectives"):
        syllabus.entry(broken, NOTEBOOKS[2].name)
    del broken.metadata["syllabus"]
    with pytest.raises(syllabus.SyllabusError, match=f"{NOTEBOOKS[2].name} has no syllabus entry"):
        syllabus.entry(broken, NOTEBOOKS[2].name)


def test_staged_notebook_folds_its_setup_cell_and_the_download_keeps_it(tmp_path):
    stored = NOTEBOOKS[3]
    page = site.stage_notebook(stored, stored, tmp_path, f"notebooks/{stored.name}", results=None)
    nb = nbformat.read(page, as_version=4)
    setup = nb.cells[colab.setup_cell_index(nb)]
    assert "hide-input" in setup.metadata["tags"] and setup.metadata["mystnb"]["code_prompt_show"].startswith("Set-up")
    others = [c for c in nb.cells if c.cell_type == "code" and c is not setup]
    assert not any("hide-input" in c.metadata.get("tags", []) for c in others), "only the set-up cell is folded"
    download = nbformat.read(tmp_path / "downloads" / "notebooks" / stored.name, as_version=4)
    assert "tags" not in download.cells[colab.setup_cell_index(download)].metadata


def test_staged_assignment_folds_its_autograder_cell_in_both_versions(tmp_path):
    src = ROOT / "notebooks" / "assignments" / "a8_trainer_and_tokenizers" / "a8_trainer_and_tokenizers.ipynb"
    nb = nbformat.read(src, as_version=4)
    student = nbformat.from_dict(nb)
    grader = next(c for c in student.cells if c.cell_type == "code" and "otter.Notebook" in c.source)
    grader.source = "# @title Autograder set-up (the public tests)\n" + grader.source.split("\n", 1)[1]
    for version in (nb, student):
        site._fold_setup(version)
        folded = [c for c in version.cells if "hide-input" in c.metadata.get("tags", [])]
        assert [c.metadata["mystnb"]["code_prompt_show"].split(" (")[0] for c in folded] == ["Set-up", "Autograder set-up"]
