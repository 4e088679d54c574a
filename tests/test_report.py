"""The HTML report of a run folder (contrastkit.report), read as text: no browser needed."""

import base64
import json
import re
import shutil

import pytest
import yaml

from contrastkit import run_folder
from contrastkit.report import render_report


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, run_cli):
    """A real run on digits, trained as tests/test_cli.py's is (the embedding map by PCA, faster than t-SNE);
    `train` writes its report.html."""
    run_dir = tmp_path_factory.mktemp("report") / "run"
    code = run_cli("train", "--dataset", "digits", "--epochs", "2", "--batch-size", "64", "--out", str(run_dir),
                   "progress=false", "plot_points=200", "embedding_method=pca")  # PCA: no t-SNE to wait for
    assert code == 0
    return run_dir


def _copy_run(source, destination):
    """The files a report reads (not the checkpoint), in a folder of their own to change."""
    destination.mkdir(parents=True)
    for name in ("config.yaml", "summary.json", "metrics.jsonl"):
        shutil.copy(source / name, destination / name)
    shutil.copytree(source / "plots", destination / "plots")
    return destination


def _edit_json(path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))
    return data


def _images(page):
    return re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)


def test_train_writes_a_report_with_every_figure_of_the_summary(tiny_run):
    page = (tiny_run / "report.html").read_text(encoding="utf-8")
    summary = json.loads((tiny_run / "summary.json").read_text())
    assert {"knn_top1", "raw_knn_top1", "linear_f1", "train_seconds", "eval_seconds", "versions"} <= set(summary)
    for key, value in summary.items():
        assert key in page, key
        if key == "versions":
            for name, version in value.items():
                assert f'<th>{name}</th><td title="versions.{name}">{version}</td>' in page
        elif isinstance(value, float) and key not in ("train_seconds", "eval_seconds"):
            assert f"{value:.4f}" in page, key  # evaluation figures, to four places
        else:
            assert str(value) in page, key
    # Each figure beside its raw-input baseline, in one row.
    row = re.search(r"<tr><th>knn_top1</th>(.*?)</tr>", page).group(1)
    assert f"{summary['knn_top1']:.4f}" in row and f"{summary['raw_knn_top1']:.4f}" in row
    assert "<th>raw input</th>" in page and "simclr on digits" in page and "temperature: 0.5" in page


def test_the_report_embeds_its_images_and_references_nothing_external(tiny_run):
    page = (tiny_run / "report.html").read_text(encoding="utf-8")
    images = _images(page)
    assert len(images) == 2  # the training curves and the embedding map
    assert all(base64.b64decode(image).startswith(b"\x89PNG\r\n\x1a\n") for image in images)
    assert base64.b64encode((tiny_run / "plots" / "embedding.png").read_bytes()).decode() in images
    assert re.findall(r'(?:src|href)="([^"]*)"', page) and all(
        link.startswith("data:") for link in re.findall(r'(?:src|href)="([^"]*)"', page))
    outside_data = re.sub(r'"data:[^"]*"', '""', page)
    for external in ("http:", "https:", "//", "<script", "url(", "@import", "<iframe", "<object"):
        assert external not in outside_data.lower(), external


def test_every_value_is_html_escaped(tiny_run, tmp_path):
    run_dir = _copy_run(tiny_run, tmp_path / 'odd <b>"name"</b> & co')
    _edit_json(run_dir / "summary.json", **{"<script>alert(1)</script>": 0.5, "device": "<img src=x onerror=alert(1)>"})
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    config["backbone"] = "</pre><script>alert(2)</script>"
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    page = render_report([run_dir])
    assert "<script" not in page and "<b>" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;/pre&gt;&lt;script&gt;alert(2)" in page
    assert "odd &lt;b&gt;&quot;name&quot;&lt;/b&gt; &amp; co" in page


def test_two_runs_compare_in_one_table_and_one_set_of_curves(tiny_run, tmp_path, run_cli, capsys):
    other = _copy_run(tiny_run, tmp_path / "other")
    _edit_json(other / "summary.json", knn_top1=0.1234)
    config = yaml.safe_load((other / "config.yaml").read_text())
    config["lr"] = 0.5
    (other / "config.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "compare.html"
    assert run_cli("report", str(tiny_run), str(other), "--out", str(out)) == 0
    assert capsys.readouterr().out == f"wrote {out}\n"
    page = out.read_text(encoding="utf-8")
    evaluation = re.search(r"<h2>Evaluation</h2>(.*?)</section>", page, re.S).group(1)
    assert evaluation.count("<table>") == 1
    assert "<th>figure</th><th>run</th><th>other</th>" in evaluation
    row = re.search(r"<tr><th>knn_top1</th>(.*?)</tr>", evaluation).group(1)
    knn_top1 = json.loads((tiny_run / "summary.json").read_text())["knn_top1"]
    assert f'<td class="number best" title="knn_top1">{knn_top1:.4f}</td>' in row and "0.1234" in row
    tie = re.search(r"<tr><th>knn_top1 \(raw input\)</th>(.*?)</tr>", evaluation).group(1)
    assert "best" not in tie  # the same raw pixels score the same: no highest to mark
    differences = re.search(r"<h2>Config differences</h2>(.*?)</section>", page, re.S).group(1)
    assert "<th>lr</th>" in differences and "<th>epochs</th>" not in differences
    assert len(_images(page)) == 3  # one set of curves, an embedding map per run


def test_the_default_output_is_the_run_folder_and_several_runs_need_out(tiny_run, tmp_path, run_cli, capsys):
    run_dir = _copy_run(tiny_run, tmp_path / "copy")
    assert run_cli("report", str(run_dir)) == 0
    assert (run_dir / "report.html").is_file() and not list(run_dir.glob(".*.tmp"))
    (tmp_path / "folder").mkdir()
    assert run_cli("report", str(run_dir), "--out", str(tmp_path / "folder")) == 0
    assert (tmp_path / "folder" / "report.html").is_file()
    capsys.readouterr()
    assert run_cli("report", str(run_dir), str(tiny_run)) == 2
    assert "say where to write it with --out FILE.html" in capsys.readouterr().err


def test_baselines_of_text_and_series_runs_and_an_old_run_without_versions(tmp_path):
    run_dir = tmp_path / "text"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("method: simcse\ndataset: sentences\n")
    (run_dir / "summary.json").write_text(json.dumps({
        "train_seconds": 3.5, "stsb_spearman": 0.81, "base_stsb_spearman": 0.8, "raw_1nn_dtw_top1": 0.7}))
    page = render_report([run_dir])
    assert "<th>figure</th><th>encoder</th><th>raw input</th><th>base model</th>" in page
    assert re.search(r"<tr><th>stsb_spearman</th><td[^>]*>0.8100</td><td>\N{EM DASH}</td>"
                     r'<td class="number" title="base_stsb_spearman">0.8000</td><td class="number">\+0.0100</td></tr>',
                     page)
    assert re.search(r"<tr><th>1nn_dtw_top1</th><td>\N{EM DASH}</td><td[^>]*>0.7000</td>", page)
    assert "(this report&#x27;s; the run did not record it)" in page
    assert "No training curves" in page and "No readable plots/embedding.png" in page


def test_fine_tuning_is_measured_against_training_from_scratch(tmp_path):
    (tmp_path / "config.yaml").write_text("method: simclr\ndataset: digits\n")
    (tmp_path / "summary.json").write_text(json.dumps({
        "knn_top1": 0.9, "raw_knn_top1": 0.8, "finetune_10pct_top1": 0.7, "scratch_finetune_10pct_top1": 0.5}))
    page = render_report([tmp_path])
    assert "<th>raw input</th><th>from scratch</th><th>encoder \N{MINUS SIGN} baseline</th>" in page
    assert re.search(r"<tr><th>knn_top1</th>.*?<td[^>]*>\+0.1000</td></tr>", page)
    assert re.search(r"<tr><th>finetune_10pct_top1</th><td[^>]*>0.7000</td><td>\N{EM DASH}</td>"
                     r"<td[^>]*>0.5000</td><td[^>]*>\+0.2000</td></tr>", page)


def test_a_run_without_summary_is_reported_as_unfinished(tmp_path):
    (tmp_path / "config.yaml").write_text("method: simclr\ndataset: digits\n")
    page = render_report([tmp_path])
    assert "has not finished training" in page and "No evaluation figures" in page and not _images(page)


def test_starting_a_run_over_removes_its_report(tmp_path):
    (tmp_path / "report.html").write_text("old")
    run_folder.start_over(tmp_path)
    assert not (tmp_path / "report.html").exists()


@pytest.mark.parametrize("make, message", [
    (lambda folder: None, "does not exist; give the --out folder of a `contrastkit train` run"),
    (lambda folder: folder.mkdir(), "is not a run folder (no config.yaml)"),
    (lambda folder: (folder.mkdir(), (folder / "config.yaml").write_text("method: simclr\n"),
                     (folder / "summary.json").write_text('{"knn_top1": 0.9')),
     "summary.json is unreadable (Expecting"),
    (lambda folder: (folder.mkdir(), (folder / "config.yaml").write_text("method: simclr\n"),
                     (folder / "summary.json").write_text("[1, 2]")),
     "summary.json holds a JSON list"),
    (lambda folder: (folder.mkdir(), (folder / "config.yaml").write_text("method: [simclr\n")),
     "config.yaml is not valid YAML"),
    (lambda folder: (folder.mkdir(), (folder / "config.yaml").write_text("method: simclr\n"),
                     (folder / "metrics.jsonl").write_bytes(b"\xff\xfe")),
     "metrics.jsonl is not the UTF-8 text contrastkit writes"),
])
def test_bad_input_gets_one_line_that_names_the_problem(tmp_path, run_cli, capsys, make, message):
    folder = tmp_path / "run"
    make(folder)
    assert run_cli("report", str(folder)) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not (folder / "report.html").exists()
