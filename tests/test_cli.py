"""The real ``gmmseg`` entry point, driven in a subprocess."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from imagefiles import voronoi_image
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = Path(sys.executable).with_name("gmmseg")
PER_IMAGE = ["anomaly.png", "labels.png", "loglik.tif", "mask_0.png", "mask_1.png", "mask_2.png",
             "overlay.png", "probabilities.tif", "summary.json"]


def cli_env(**extra):
    """The environment of a console-script run: this tree's gmmseg first on
    the path (the installed script may be an editable install of another
    checkout), one kernel thread."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, PYTHONPATH=path, GMMSEG_NUM_THREADS="1", **extra)


def run(*args, cwd=None):
    cmd = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "gmmseg"]
    return subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, cwd=cwd, env=cli_env(),
                          timeout=300)


def write_image(path, seed=0, regions=3, size=48):
    img, _ = voronoi_image(size=size, n_regions=regions, noise=0.03, seed=seed)
    Image.fromarray((img * 255).astype(np.uint8)).save(path)
    return path


def assert_outputs(folder, k=3):
    assert sorted(p.name for p in folder.iterdir()) == sorted(PER_IMAGE[:3] + [f"mask_{i}.png" for i in range(k)] + PER_IMAGE[6:])
    labels = np.asarray(Image.open(folder / "labels.png"))
    assert labels.max() < k
    probs = tifffile.imread(folder / "probabilities.tif")
    assert probs.shape == labels.shape + (k,)
    np.testing.assert_allclose(probs.sum(axis=2), 1.0, atol=1e-5)
    np.testing.assert_array_equal(probs.argmax(axis=2), labels)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["settings"]["n_components"] == k


def test_version_and_help():
    out = run("--version")
    assert out.returncode == 0 and out.stdout.startswith("gmmseg ")
    out = run("segment", "--help")
    assert out.returncode == 0 and "--n-components" in out.stdout and "--covariance" in out.stdout
    out = run()
    assert out.returncode == 2


def test_segment_one_image(tmp_path):
    img = write_image(tmp_path / "scene.png")
    out = run("segment", img, "-k", "3", "--out", tmp_path / "out")
    assert out.returncode == 0, out.stderr
    assert_outputs(tmp_path / "out" / "scene")
    run_summary = json.loads((tmp_path / "out" / "run_summary.json").read_text())
    assert run_summary["failed"] == 0 and run_summary["images"] == 1
    assert (tmp_path / "out" / "run_summary.csv").read_text().startswith("input,output,status")


def test_segment_a_folder_in_parallel_with_name_clashes(tmp_path):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    for i in range(3):
        write_image(src / f"img{i}.png", seed=i)
    write_image(src / "sub" / "img0.png", seed=7)
    out = run("segment", src, "-k", "3", "--out", tmp_path / "out", "--jobs", "2", "--recursive")
    assert out.returncode == 0, out.stderr
    folders = sorted(p.name for p in (tmp_path / "out").iterdir() if p.is_dir())
    assert folders == ["img0", "img0-2", "img1", "img2"]
    for name in folders:
        assert_outputs(tmp_path / "out" / name)
    assert "4 of 4 images done" in out.stderr


def test_refuses_to_overwrite_without_force(tmp_path):
    img = write_image(tmp_path / "a.png")
    assert run("segment", img, "-k", "3", "--out", tmp_path / "out").returncode == 0
    before = (tmp_path / "out" / "a" / "labels.png").read_bytes()
    again = run("segment", img, "-k", "2", "--out", tmp_path / "out")
    assert again.returncode == 1 and "already exists" in again.stderr and "--force" in again.stderr
    assert (tmp_path / "out" / "a" / "labels.png").read_bytes() == before
    forced = run("segment", img, "-k", "2", "--out", tmp_path / "out", "--force")
    assert forced.returncode == 0
    assert not (tmp_path / "out" / "a" / "mask_2.png").exists()  # the old set was replaced as a whole


def test_select_k_finds_the_regions_and_plots(tmp_path):
    img = write_image(tmp_path / "four.png", seed=1, regions=4, size=120)
    out = run("select-k", img, "--k-range", "1-7", "--plot", tmp_path / "bic.png")
    assert out.returncode == 0, out.stderr
    starred = [line for line in out.stdout.splitlines() if line.startswith("*")]
    assert len(starred) == 1 and starred[0].split()[1] == "4"
    assert "best K = 4 (full) by lowest BIC at an effective sample size of 300 pixels" in out.stdout
    assert "edge" not in out.stdout
    plot = Image.open(tmp_path / "bic.png")
    assert plot.size[0] > 400 and plot.mode == "RGB"


def test_fit_then_apply_equals_segment(tmp_path):
    img = write_image(tmp_path / "a.png", seed=3)
    assert run("segment", img, "-k", "3", "--seed", "2", "--out", tmp_path / "seg").returncode == 0
    out = run("fit", img, "-k", "3", "--seed", "2", "--save-model", tmp_path / "m.json")
    assert out.returncode == 0, out.stderr
    out = run("apply", "--model", tmp_path / "m.json", img, "--out", tmp_path / "app")
    assert out.returncode == 0, out.stderr
    a = np.asarray(Image.open(tmp_path / "seg" / "a" / "labels.png"))
    b = np.asarray(Image.open(tmp_path / "app" / "a" / "labels.png"))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "seg" / "a" / "probabilities.tif"),
                                  tifffile.imread(tmp_path / "app" / "a" / "probabilities.tif"))
    model_exists = run("fit", img, "--save-model", tmp_path / "m.json")
    assert model_exists.returncode == 2 and "already exists" in model_exists.stderr


def test_settings_that_take_none_take_it_on_the_command_line(tmp_path):
    """'gmmseg fit' trains on a million pixels by default; '--max-samples
    none' (or 'all') on every pixel, as the help says, and '--seed random'
    draws a new seed; the model files say so."""
    from gmmseg import Inspector

    img = write_image(tmp_path / "a.png", seed=3)
    for options, max_samples, seed in (([], 1_000_000, 0), (["--max-samples", "none"], None, 0),
                                       (["--max-samples", "ALL", "--seed", "random"], None, None),
                                       (["--max-samples", "5000", "--spatial-fit-pixels", "none"], 5000, 0)):
        path = tmp_path / f"m{len(list(tmp_path.glob('m*.json')))}.json"
        out = run("fit", img, "-k", "2", *options, "--save-model", path)
        assert out.returncode == 0, out.stderr
        params = Inspector.load(path).params
        assert (params.max_samples, params.random_state) == (max_samples, seed)
        assert params.spatial_fit_pixels == (None if "--spatial-fit-pixels" in options else 250_000)


def test_bad_file_in_a_folder_does_not_stop_the_rest(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    write_image(src / "good1.png", seed=1)
    write_image(src / "good2.png", seed=2)
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    out = run("segment", src, "-k", "3", "--out", tmp_path / "out")
    assert out.returncode == 1
    errors = [line for line in out.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "broken.png" in errors[0]
    assert "Traceback" not in out.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.is_dir()) == ["good1", "good2"]
    summary = json.loads((tmp_path / "out" / "run_summary.json").read_text())
    assert [r["status"] for r in summary["results"]] == ["failed", "ok", "ok"]


def _bad_inputs(tmp):
    import struct
    import zlib

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    good = write_image(tmp / "good.png")
    cases = {
        "missing.png": None,
        "empty.png": b"",
        "notes.png": b"this is text",
        "truncated.png": good.read_bytes()[:200],
        "bomb.png": b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 40000, 40000, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b""),
        "transparent.png": None,
        "nan.tif": None,
    }
    paths = {}
    for name, data in cases.items():
        path = tmp / name
        if data is not None:
            path.write_bytes(data)
        paths[name] = path
    Image.fromarray(np.zeros((8, 8, 4), np.uint8)).save(paths["transparent.png"])
    tifffile.imwrite(paths["nan.tif"], np.full((6, 6), np.nan, np.float32))
    good.unlink()
    return paths


@pytest.mark.parametrize("name, problem", [
    ("missing.png", "file not found"),
    ("empty.png", "empty file"),
    ("notes.png", "not an image"),
    ("truncated.png", "truncated or corrupt"),
    ("bomb.png", "too large"),
    ("transparent.png", "no usable pixels"),
    ("nan.tif", "no usable pixels"),
])
def test_every_bad_input_gets_one_line(tmp_path, name, problem):
    paths = _bad_inputs(tmp_path)
    out = run("segment", paths[name], "-k", "2", "--out", tmp_path / "out")
    assert out.returncode == 1
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line]
    assert len(errors) == 1, out.stderr
    assert name in errors[0] and problem in errors[0]
    assert "Traceback" not in out.stderr
    produced = [p for p in (tmp_path / "out").rglob("*") if p.name not in ("run_summary.json", "run_summary.csv")] if (tmp_path / "out").exists() else []
    assert produced == []


@pytest.mark.parametrize("args, message", [
    (["segment", "x.png", "-k", "0", "--out", "o"], "n_components must be an integer >= 1"),
    (["segment", "x.png", "--color-space", "cmyk", "--out", "o"], "invalid choice"),
    (["select-k", "x.png", "--k-range", "5-2"], "first <= last"),
    (["segment", "x.png"], "--out"),
    # Bounded by what the outputs hold (labels.png: 255 components) and by
    # sane maxima, before any image is read:
    (["segment", "x.png", "-k", "1000", "--out", "o"], "<= 255, got 1000"),
    (["fit", "x.png", "-k", "256", "--save-model", "m.json"], "<= 255, got 256"),
    (["segment", "x.png", "--seed", "-1", "--out", "o"], "random_state must be an integer in [0, 2**32 - 1]"),
    (["fit", "x.png", "--seed=-1", "--save-model", "m.json"], "random_state must be an integer in [0, 2**32 - 1]"),
    (["segment", "x.png", "--spatial-weight", "1e308", "--out", "o"], "spatial_weight must be a finite number >= 0 and <= 1000"),
    (["segment", "x.png", "--smoothing", "inf", "--out", "o"], "smoothing must be a finite number"),
    (["segment", "x.png", "--n-init", "100000", "--out", "o"], "n_init must be an integer >= 1 and <= 1000"),
    (["select-k", "x.png", "--k-range", "1-1000"], "k_range must be an integer >= 1 and <= 255, got 1000"),
    (["select-k", "x.png", "--k-range", "1-100000000000000"], "<= 255"),
    (["fit", "x.png", "--k-range", "1-300", "--save-model", "m.json"], "<= 255, got 300"),
    (["fit", "x.png", "--score-smoothing", "1e9", "--save-model", "m.json"], "smoothing_sigma must be a finite number >= 0 and <= 100"),
    (["fit", "x.png", "--border-margin", "abc", "--save-model", "m.json"], "--border-margin: expected a whole number, got 'abc'"),
    (["fit", "x.png", "--row-column-sigma", "wide", "--save-model", "m.json"],
     "--row-column-sigma: expected a number, got 'wide'"),
    (["segment", "x.png", "-k", "2.5", "--out", "o"], "-k/--n-components: expected a whole number, got '2.5'"),
    (["fit", "x.png", "--max-samples", "many", "--save-model", "m.json"],
     "--max-samples: expected a whole number or none / all, got 'many'"),
])
def test_usage_errors_exit_2(tmp_path, args, message):
    write_image(tmp_path / "x.png")
    out = run(*args, cwd=tmp_path)
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.png"]  # nothing was written


def test_bad_model_file_for_apply(tmp_path):
    img = write_image(tmp_path / "a.png")
    (tmp_path / "m.json").write_text("{\"format\": \"something else\"}")
    out = run("apply", "--model", tmp_path / "m.json", img, "--out", tmp_path / "out")
    assert out.returncode == 2 and "not a gmmseg model" in out.stderr and "Traceback" not in out.stderr


def test_debug_shows_traceback(tmp_path):
    out = run("--debug", "select-k", tmp_path / "missing.png")
    assert out.returncode == 1 and "Traceback" in out.stderr and "file not found" in out.stderr


def test_gui_without_a_display_says_why():
    cmd = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "gmmseg"]
    env = {k: v for k, v in cli_env().items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    out = subprocess.run(cmd + ["gui"], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 1 and "no display" in out.stderr and "Traceback" not in out.stderr


def test_ctrl_c_stops_cleanly_without_partial_outputs(tmp_path):
    import signal
    import time

    src = tmp_path / "in"
    src.mkdir()
    for i in range(40):
        write_image(src / f"img{i:02d}.png", seed=i, size=200)
    # Processed first (sorted): its finished output is named like a staging
    # folder, and the cleanup after Ctrl-C must leave it alone.
    write_image(src / ".a.partial.png", seed=99)
    cmd = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "gmmseg"]
    out_dir = tmp_path / "out"
    # Slow enough per image (restarts, no early stop) that the batch is still running.
    proc = subprocess.Popen(cmd + ["segment", str(src), "-k", "3", "--out", str(out_dir), "--jobs", "1",
                                   "--n-init", "4", "--tol", "0", "--max-iter", "150", "--spatial-weight", "0.5"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=cli_env(),
                            # A background CI shell may ignore SIGINT, and Python
                            # keeps an inherited "ignore": give the child the default.
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline and not (out_dir.exists() and any(p.is_dir() and not p.name.startswith(".") for p in out_dir.iterdir())):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    finished = [p for p in out_dir.iterdir() if p.is_dir() and p.name != ".a.partial"]
    assert 1 <= len(finished) < 40
    for folder in finished:
        assert not folder.name.startswith("."), f"partial folder left: {folder.name}"
        assert_outputs(folder)
    assert_outputs(out_dir / ".a.partial")
    summary = json.loads((out_dir / "run_summary.json").read_text())
    assert summary["interrupted"] is True


def test_fit_and_inspect_defects(tmp_path):
    import csv

    from imagefiles import write_inspection_set

    refs, parts = write_inspection_set(tmp_path, (1, 2), (10, 11), 50)
    out = run("fit", *refs, "--save-model", tmp_path / "m.json")
    assert out.returncode == 0, out.stderr
    assert "chosen by BIC" in out.stdout and "held-out" in out.stdout
    assert "image threshold" in out.stdout and "false-reject rate of 0.05" in out.stdout
    assert "pixel threshold" in out.stdout and "false-alarm rate of 0.0001" in out.stdout

    out = run("inspect", "--model", tmp_path / "m.json", parts, "--report", tmp_path / "report.csv",
              "--out", tmp_path / "res")
    assert out.returncode == 0, out.stderr
    rows = {Path(r["input"]).name: r for r in csv.DictReader(open(tmp_path / "report.csv"))}
    # The verdict is the image score against the image threshold, in the
    # same units: pass below it, fail above it (then with regions).
    for name, verdict in (("part10.png", "fail"), ("part11.png", "fail"), ("part99_good.png", "pass")):
        row = rows[name]
        score, threshold = float(row["image_score"]), float(row["image_threshold"])
        assert row["verdict"] == verdict and (score > threshold) == (verdict == "fail") and threshold >= 0
        assert (int(row["regions"]) > 0) == (verdict == "fail") and float(row["pixel_threshold"]) == \
            float(rows["part10.png"]["pixel_threshold"])
        sign = ">" if verdict == "fail" else "<="
        assert f"{name}: {verdict}, image score {score:.2f} {sign} image threshold {threshold:.2f}" in out.stderr
    assert int(rows["part10.png"]["regions"]) >= 3
    summary_header = (tmp_path / "res" / "run_summary.csv").read_text().splitlines()[0]
    assert "image_score,image_threshold,pixel_threshold" in summary_header
    folder = tmp_path / "res" / "part10"
    image_summary = json.loads((folder / "summary.json").read_text())
    assert image_summary["verdict"] == "fail" and image_summary["image_score"] > image_summary["image_threshold"]
    assert image_summary["pixel_threshold"] == pytest.approx(float(rows["part10.png"]["pixel_threshold"]), abs=1e-4)
    assert sorted(p.name for p in folder.iterdir()) == ["anomaly.png", "overlay.png", "regions.csv", "score.tif", "summary.json"]
    regions = list(csv.DictReader(open(folder / "regions.csv")))
    assert len(regions) == int(rows["part10.png"]["regions"])
    mask = np.asarray(Image.open(folder / "anomaly.png"))
    assert mask.max() == 255 and int(rows["part10.png"]["defect_area"]) == int((mask > 0).sum())

    strict = run("inspect", "--model", tmp_path / "m.json", parts / "part10.png", "--report",
                 tmp_path / "r2.csv", "--fail-on-defects")
    assert strict.returncode == 3
    again = run("inspect", "--model", tmp_path / "m.json", parts, "--report", tmp_path / "report.csv")
    assert again.returncode == 2 and "already exists" in again.stderr
    (parts / "broken.png").write_bytes(b"junk")
    broken = run("inspect", "--model", tmp_path / "m.json", parts, "--report", tmp_path / "r3.csv")
    assert broken.returncode == 1 and "broken.png" in broken.stderr
    assert "failed" in (tmp_path / "r3.csv").read_text()
    plain = run("inspect", "--model", tmp_path / "nope.json", parts, "--report", tmp_path / "r4.csv")
    assert plain.returncode == 2 and "model file not found" in plain.stderr


def test_odd_but_valid_images_are_segmented(tmp_path):
    """16-bit, grey, palette, CMYK, RGBA, EXIF-rotated and single-colour
    images are handled, not refused; a glob pattern selects them."""
    from imagefiles import png16_bytes

    src = tmp_path / "odd"
    src.mkdir()
    rng = np.random.RandomState(0)
    base, _ = voronoi_image(size=40, n_regions=3, noise=0.03, seed=4)
    rgb8 = (base * 255).astype(np.uint8)
    (src / "deep.png").write_bytes(png16_bytes((base * 65535).astype(np.uint16)))
    Image.fromarray(rgb8[..., 0]).save(src / "grey.png")
    Image.fromarray(rgb8).quantize(colors=8).save(src / "palette.png")
    Image.fromarray(rgb8).convert("CMYK").save(src / "cmyk.jpg")
    alpha = np.full((40, 40), 255, np.uint8)
    alpha[:5] = 0
    Image.fromarray(np.dstack([rgb8, alpha])).save(src / "rgba.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rgb8[:, :30]).save(src / "rotated.jpg", exif=exif)
    Image.fromarray(np.full((20, 20, 3), 90, np.uint8)).save(src / "flat.png")
    tifffile.imwrite(src / "float.tif", rng.rand(30, 30, 3).astype(np.float32), photometric="rgb")
    out = run("segment", str(src / "*.*"), "-k", "3", "--out", tmp_path / "out")
    assert out.returncode == 0, out.stderr
    done = sorted(p.name for p in (tmp_path / "out").iterdir() if p.is_dir())
    assert done == ["cmyk", "deep", "flat", "float", "grey", "palette", "rgba", "rotated"]
    rotated = np.asarray(Image.open(tmp_path / "out" / "rotated" / "labels.png"))
    assert rotated.shape == (30, 40)  # EXIF orientation applied
    rgba = np.asarray(Image.open(tmp_path / "out" / "rgba" / "labels.png"))
    assert np.all(rgba[:5] == 255) and np.all(rgba[5:] < 3)  # transparent rows masked


# ---------------------------------------------------------------------------
# issue 13: names, run summaries, killed runs, permissions, memory
def _source(folder):
    return Path(json.loads((folder / "summary.json").read_text())["image"]["source"]).resolve()


def test_clashing_output_names_are_unique_in_the_batch_and_on_disk(tmp_path):
    """d1/x.png, d2/x.png and x-2.png used to share o/x-2 (one result lost,
    or a valid image reported failed without --force). Now every input gets
    its own folder, avoiding the other inputs' names and folders that hold
    another input's outputs; the same batch again gets the same names."""
    for folder in ("d1", "d2", "e"):
        (tmp_path / folder).mkdir()
    a = write_image(tmp_path / "d1" / "x.png", seed=1, regions=2)
    b = write_image(tmp_path / "d2" / "x.png", seed=2, regions=2)
    c = write_image(tmp_path / "x-2.png", seed=3, regions=2)
    other = write_image(tmp_path / "e" / "x-3.png", seed=4, regions=2)
    dots = tmp_path / "..png"  # its stem "." would name the output folder itself
    Image.open(write_image(tmp_path / "dots.png", seed=5, regions=2)).save(dots, format="PNG")
    out_dir = tmp_path / "o"
    assert run("segment", other, "-k", "2", "--out", out_dir).returncode == 0
    before = (out_dir / "x-3" / "labels.png").read_bytes()
    for extra in ([], ["--force"]):
        out = run("segment", a, b, c, dots, "-k", "2", "--out", out_dir, *extra)
        assert out.returncode == 0, out.stderr
        assert sorted(p.name for p in out_dir.iterdir() if p.is_dir()) == ["image", "x", "x-2", "x-3", "x-4"]
        assert [_source(out_dir / n) for n in ("x", "x-2", "x-3", "x-4", "image")] == \
            [a.resolve(), c.resolve(), other.resolve(), b.resolve(), dots.resolve()]
        assert (out_dir / "x-3" / "labels.png").read_bytes() == before


def test_run_summary_of_an_earlier_run_is_kept_without_force(tmp_path):
    one = write_image(tmp_path / "one.png", seed=1, regions=2)
    two = write_image(tmp_path / "two.png", seed=2, regions=2)
    out_dir = tmp_path / "o"
    assert run("segment", one, "-k", "2", "--out", out_dir).returncode == 0
    first = (out_dir / "run_summary.json").read_text(), (out_dir / "run_summary.csv").read_text()
    out = run("segment", two, "-k", "2", "--out", out_dir)
    assert out.returncode == 0, out.stderr
    assert ((out_dir / "run_summary.json").read_text(), (out_dir / "run_summary.csv").read_text()) == first
    second = json.loads((out_dir / "run_summary-2.json").read_text())
    assert [r["input"] for r in second["results"]] == [str(two)]
    assert "two.png" in (out_dir / "run_summary-2.csv").read_text()
    assert "run summary in run_summary-2.json (an earlier run's is kept" in out.stderr
    forced = run("segment", two, "-k", "2", "--out", out_dir, "--force")
    assert forced.returncode == 0
    assert [r["input"] for r in json.loads((out_dir / "run_summary.json").read_text())["results"]] == [str(two)]
    assert not (out_dir / "run_summary-3.json").exists()


def _dead_pid():
    """The PID of a process that has ended."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _staging(folder, name, owner):
    path = folder / name
    path.mkdir(parents=True)
    (path / "labels.png").write_bytes(b"half-written")
    if owner is not None:
        (path / ".gmmseg-staging.json").write_text(json.dumps(owner))
    return path


def test_a_later_run_removes_only_staging_folders_of_dead_runs(tmp_path):
    import socket

    out_dir = tmp_path / "o"
    here = socket.gethostname()
    dead = _staging(out_dir, ".a.1a2b3c4d.partial", {"pid": _dead_pid(), "host": here, "start": None})
    alive = _staging(out_dir, ".b.5e6f7a8b.partial", {"pid": os.getpid(), "host": here, "start": None})
    elsewhere = _staging(out_dir, ".c.9c0d1e2f.partial", {"pid": _dead_pid(), "host": here + "-other", "start": None})
    unmarked = _staging(out_dir, ".d.partial", None)  # e.g. a finished output of ".d.partial.png"
    img = write_image(tmp_path / "new.png", seed=3, regions=2)
    out = run("segment", img, "-k", "2", "--out", out_dir)
    assert out.returncode == 0, out.stderr
    assert "removed 1 unfinished output folder" in out.stderr
    assert not dead.exists()
    assert alive.exists() and elsewhere.exists() and unmarked.exists()
    assert (out_dir / "new" / "labels.png").exists() and not (out_dir / "new" / ".gmmseg-staging.json").exists()


def _children(pid):
    """PIDs of the live (not zombie) children of ``pid``, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rfind(")") + 2:].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def _gone(pid):
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return text[text.rfind(")") + 2:].split()[0] in ("Z", "X")


def _batch_with_workers(tmp_path, count, wanted, *extra, **popen):
    """Start ``gmmseg segment`` of ``count`` images with ``--jobs 2`` and
    wait until ``wanted`` of its worker processes run and have got into their
    work (importing, fitting). Returns the process, the output folder and
    the workers' PIDs."""
    import time

    src = tmp_path / "in"
    src.mkdir()
    for i in range(count):
        write_image(src / f"img{i:0{len(str(count - 1))}d}.png", seed=i, size=120)
    cmd = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "gmmseg"]
    out_dir = tmp_path / "out"
    proc = subprocess.Popen(cmd + ["segment", str(src), "-k", "3", "--out", str(out_dir), "--jobs", "2",
                                   "--n-init", "2", *extra], env=cli_env(), **popen)
    deadline = time.time() + 120
    workers = []
    while time.time() < deadline and len(workers) < wanted:
        workers = [pid for pid in _children(proc.pid) if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        time.sleep(0.05)
    time.sleep(1.0)  # into their work
    return proc, out_dir, workers


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
def test_workers_leave_when_the_parent_is_killed(tmp_path):
    """SIGKILL to the parent of a --jobs 2 batch (as an out-of-memory kill):
    its workers notice within a few seconds and exit, removing their
    unfinished staging folders; a later run finds nothing to clean."""
    import signal
    import time

    proc, out_dir, workers = _batch_with_workers(tmp_path, 12, 2, "--tol", "0", stdout=subprocess.DEVNULL,
                                                 stderr=subprocess.DEVNULL)
    assert len(workers) >= 2 and proc.poll() is None, "the batch did not get going"
    everyone = _children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.time() + 10
    while time.time() < deadline and not all(_gone(pid) for pid in everyone):
        time.sleep(0.1)
    assert [pid for pid in everyone if not _gone(pid)] == [], "processes outlived their killed parent"
    assert [p.name for p in out_dir.iterdir() if p.name.endswith(".partial")] == []


def test_a_killed_worker_fails_only_its_image_or_reruns_it(tmp_path):
    """A worker killed mid-batch (the kernel's out-of-memory killer) used to
    break the whole pool: every later image failed with a traceback-like
    error and no run summary was written. Now the unfinished images run
    again one at a time and the batch completes."""
    import signal

    proc, out_dir, workers = _batch_with_workers(tmp_path, 4, 1, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                                 text=True)
    assert workers, "no worker was seen"
    os.kill(workers[0], signal.SIGKILL)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert "a worker process ended abruptly" in stderr and "Traceback" not in stderr
    assert sorted(p.name for p in out_dir.iterdir() if p.is_dir()) == [f"img{i}" for i in range(4)]
    for i in range(4):
        assert_outputs(out_dir / f"img{i}")
    summary = json.loads((out_dir / "run_summary.json").read_text())
    assert summary["failed"] == 0 and summary["images"] == 4


@pytest.mark.parametrize("umask", [0o027])
def test_outputs_follow_the_umask(tmp_path, umask):
    """Files and folders get the modes the user's umask gives any new file,
    not mkstemp's 0600 and mkdtemp's 0700."""
    img = write_image(tmp_path / "a.png", seed=1, regions=2)
    cmd = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "gmmseg"]
    for args in (["segment", str(img), "-k", "2", "--out", str(tmp_path / "o")],
                 ["fit", str(img), "-k", "2", "--save-model", str(tmp_path / "o" / "m.json")],
                 ["inspect", "--model", str(tmp_path / "o" / "m.json"), str(img), "--report",
                  str(tmp_path / "o" / "r.csv"), "--out", str(tmp_path / "o" / "ins")]):
        out = subprocess.run(cmd + args, capture_output=True, text=True, env=cli_env(), timeout=300,
                             preexec_fn=lambda: os.umask(umask))
        assert out.returncode == 0, out.stderr
    paths = list((tmp_path / "o").rglob("*"))
    assert len(paths) > 15
    for path in [tmp_path / "o"] + paths:
        expected = (0o777 if path.is_dir() else 0o666) & ~umask
        assert path.stat().st_mode & 0o777 == expected, f"{path}: {oct(path.stat().st_mode & 0o777)}"


def test_out_of_memory_names_the_image_and_the_memory_it_needs(tmp_path, monkeypatch):
    """A MemoryError while processing an image fails that image only, with
    its size, an estimate of the memory it needs and NumPy's own account of
    the allocation that failed."""
    from gmmseg import cli, workflows
    from gmmseg.params import SegmenterParams

    img = write_image(tmp_path / "big.png", seed=1, size=300)

    def out_of_memory(*args, **kwargs):
        raise MemoryError("Unable to allocate 2.68 GiB for an array with shape (300, 300, 4000) and data type float64")

    monkeypatch.setattr(workflows, "segment_file", out_of_memory)
    task = workflows.Task("segment", str(img), str(tmp_path / "out" / "big"), settings=SegmenterParams(n_components=8).to_dict())
    row = workflows.run_task(task, cli._one_line)
    assert row["status"] == "failed"
    assert row["error"].startswith("out of memory: processing this 300 x 300 image needs about ")
    assert " MB (Unable to allocate 2.68 GiB" in row["error"]
    assert row["error"].endswith("run fewer images at once (--jobs) or free memory")
    # On a Dask worker --jobs does not apply: the advice is about the workers.
    import functools

    row = workflows.run_task(task, functools.partial(cli._one_line, on_cluster=True))
    assert " MB (Unable to allocate 2.68 GiB" in row["error"] and "--jobs" not in row["error"]
    assert row["error"].endswith("give the Dask workers more memory or fewer threads each (dask worker --memory-limit, "
                                 "--nthreads)")
    needed, width, height = workflows.memory_needed(task)
    assert (width, height) == (300, 300) and 300 * 300 * 8 * 4 < needed < 300 * 300 * 1000
    assert workflows.killed_message(task).startswith("out of memory: the worker process processing it was killed; "
                                                     "this 300 x 300 image needs about ")


def test_outputs_and_max_megapixels(tmp_path):
    img = tmp_path / "a.png"
    write_image(img)
    out = run("segment", img, "--out", tmp_path / "out", "-k", "3", "--outputs", "summary,labels", "--jobs", "auto")
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in (tmp_path / "out" / "a").iterdir()) == ["labels.png", "summary.json"]
    summary = json.loads((tmp_path / "out" / "a" / "summary.json").read_text())
    assert summary["files"] == ["labels.png", "summary.json"]
    out = run("segment", img, "--out", tmp_path / "out2", "--outputs", "labels,pdf")
    assert out.returncode == 2 and "--outputs" in out.stderr and "pdf" in out.stderr
    # 48 x 48 pixels against a limit of 0.001 megapixels: refused, with the option named
    out = run("segment", img, "--out", tmp_path / "out3", "--max-megapixels", "0.001")
    assert out.returncode == 1
    assert "too large (48 x 48" in out.stderr and "use --max-megapixels 1" in out.stderr
    assert not (tmp_path / "out3" / "a").exists()
    out = run("select-k", img, "--k-range", "1-2", "--max-megapixels", "0.001")
    assert out.returncode == 1 and "use --max-megapixels 1" in out.stderr


def test_labels_and_overlay_of_a_grey_image_tell_components_apart(tmp_path):
    """Mean colours of a grey image's components are greys a few levels
    apart; the exported palette and overlay use distinct hues instead (the
    application's, from gmmseg.export.display_colors)."""
    from gmmseg.export import display_colors

    grey = np.full((40, 60), 90, np.uint8)
    grey[:, 20:40], grey[:, 40:] = 110, 130
    grey = np.clip(grey + np.random.RandomState(0).normal(scale=2, size=grey.shape), 0, 255).astype(np.uint8)
    Image.fromarray(grey, mode="L").save(tmp_path / "grey.png")
    out = run("segment", tmp_path / "grey.png", "-k", "3", "--out", tmp_path / "out")
    assert out.returncode == 0, out.stderr
    labels = Image.open(tmp_path / "out" / "grey" / "labels.png")
    palette = np.array(labels.getpalette()[:9]).reshape(3, 3)
    np.testing.assert_array_equal(palette, np.rint(display_colors(np.zeros((3, 3)), True) * 255))
    assert min(np.abs(palette[i] - palette[j]).max() for i in range(3) for j in range(i)) > 60
    assert not np.all(palette == palette[:, :1])  # hues, not greys
    overlay = np.asarray(Image.open(tmp_path / "out" / "grey" / "overlay.png").convert("RGB")).astype(int)
    chroma = overlay.max(axis=2) - overlay.min(axis=2)
    assert (chroma > 20).all()  # coloured wherever a component is drawn, not grey
