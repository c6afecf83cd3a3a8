"""gmmseg on Dask: batches on a real local cluster (a scheduler and two
worker processes on 127.0.0.1), and chunked arrays against the in-memory
result."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from imagefiles import voronoi_image
from PIL import Image
from test_cli import SCRIPT, cli_env, run

distributed = pytest.importorskip("distributed")
da = pytest.importorskip("dask.array")

import gmmseg.dask as gdask  # noqa: E402  (after the skip: it needs Dask when used)
from gmmseg import NotFittedError, Segmenter  # noqa: E402

MAPS = ("labels.png", "mask_0.png", "mask_1.png", "mask_2.png", "probabilities.tif", "loglik.tif", "anomaly.png",
        "overlay.png")


# No dashboard; the scheduler's small HTTP server (health checks) on any free port.
QUIET = {"dashboard_address": None, "scheduler_kwargs": {"dashboard_address": ":0"}}


@pytest.fixture(scope="module")
def cluster():
    """A scheduler and two single-threaded worker processes (with nannies,
    which restart a killed worker), as ``dask worker`` would start them."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  **QUIET, env={"GMMSEG_NUM_THREADS": "1"}) as c, \
            distributed.Client(c, set_as_default=False) as client:
        client.wait_for_workers(2, timeout=120)
        yield c.scheduler_address, client


def write_png(path, seed, size=64, alpha=False, grey=False):
    img, _ = voronoi_image(size=size, n_regions=3, noise=0.05, seed=seed)
    pixels = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    if grey:
        pixels = pixels[:, :, 1]
    elif alpha:
        a = np.full(pixels.shape[:2] + (1,), 255, dtype=np.uint8)
        a[: size // 4, : size // 4] = 0
        pixels = np.concatenate([pixels, a], axis=2)
    Image.fromarray(pixels).save(path)
    return path


def rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def test_scheduler_writes_the_same_files_as_a_local_run(tmp_path, cluster):
    address, _ = cluster
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        write_png(src / f"img{i}.png", seed=i)
    write_png(src / "transparent.png", seed=7, alpha=True)
    write_png(src / "grey.png", seed=8, grey=True)
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    # Relative paths, from the folder above: the workers' working folder is another.
    local = run("segment", "in", "-k", "3", "--out", "local", "--jobs", "1", cwd=tmp_path)
    remote = run("segment", "in", "-k", "3", "--out", "remote", "--scheduler", address, cwd=tmp_path)
    assert local.returncode == remote.returncode == 1, remote.stderr  # the broken file
    assert "Traceback" not in remote.stderr
    broken = [line for line in remote.stderr.splitlines() if line.startswith("gmmseg: error:")]
    assert broken == [line for line in local.stderr.splitlines() if line.startswith("gmmseg: error:")]
    assert len(broken) == 1 and "in/broken.png" in broken[0]
    names = sorted(p.name for p in (tmp_path / "local").iterdir() if p.is_dir())
    assert names == ["grey", "img0", "img1", "img2", "transparent"]
    assert sorted(p.name for p in (tmp_path / "remote").iterdir() if p.is_dir()) == names
    for name in names:
        for file in MAPS:
            a, b = tmp_path / "local" / name / file, tmp_path / "remote" / name / file
            assert a.read_bytes() == b.read_bytes(), f"{name}/{file} differs"
        a = json.loads((tmp_path / "local" / name / "summary.json").read_text())
        b = json.loads((tmp_path / "remote" / name / "summary.json").read_text())
        assert b["image"].pop("source") == str(tmp_path / "in" / f"{name}.png")  # absolute on a worker
        a["image"].pop("source")
        assert a == b
    # The run summary spells paths as given; only the outputs' folder differs.
    remote_rows = [{**r, "output": r["output"].replace("remote", "local")} for r in rows(tmp_path / "remote" / "run_summary.csv")]
    assert remote_rows == rows(tmp_path / "local" / "run_summary.csv")
    summary = json.loads((tmp_path / "remote" / "run_summary.json").read_text())
    assert summary["images"] == 6 and summary["failed"] == 1 and not summary["interrupted"]
    # inspect: the same report
    assert run("fit", src / "img0.png", src / "img1.png", "--save-model", tmp_path / "model.json", "-k", "3").returncode == 0
    for where, extra in (("local", ["--jobs", "1"]), ("remote", ["--scheduler", address])):
        out = run("inspect", "--model", "model.json", "in/img2.png", "in/grey.png", "--report", f"{where}.csv", *extra,
                  cwd=tmp_path)
        assert out.returncode == 0, out.stderr
    assert rows(tmp_path / "remote.csv") == rows(tmp_path / "local.csv")


def test_a_worker_killed_mid_run_loses_no_image(tmp_path, cluster):
    address, client = cluster
    src = tmp_path / "in"
    src.mkdir()
    n = 10
    for i in range(n):
        write_png(src / f"img{i}.png", seed=i, size=160)  # about a second each with the default settings
    cmd = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "gmmseg"]
    proc = subprocess.Popen(cmd + ["segment", str(src), "-k", "3", "--out", str(tmp_path / "out"), "--scheduler", address],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())
    victim = None
    deadline = time.time() + 120
    while victim is None and time.time() < deadline and proc.poll() is None:
        busy = [worker for worker, keys in client.processing().items() if keys]
        if busy and (tmp_path / "out").is_dir() and any(p.is_dir() for p in (tmp_path / "out").iterdir()):
            victim = busy[0]  # a worker in the middle of the batch, holding an image
        time.sleep(0.05)
    assert victim is not None, "the batch ended before a worker could be killed"
    pid = client.run(os.getpid, workers=[victim])[victim]
    os.kill(pid, signal.SIGKILL)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    summary = json.loads((tmp_path / "out" / "run_summary.json").read_text())
    assert summary["images"] == n and summary["failed"] == 0
    for i in range(n):
        folder = tmp_path / "out" / f"img{i}"
        assert sorted(p.name for p in folder.iterdir()) == sorted([*MAPS, "summary.json"])
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no unfinished folder left
    client.wait_for_workers(2, timeout=120)  # the nanny restarted it


def test_a_rerun_image_may_replace_only_the_folder_this_run_made(tmp_path):
    """An image whose worker died after finishing its folder runs again and
    must not fail on that folder; folders there before the run are refused."""
    from gmmseg.workflows import Task

    (tmp_path / "before").mkdir()
    tasks = [Task("segment", "a.png", str(tmp_path / "before")), Task("segment", "b.png", str(tmp_path / "new")),
             Task("segment", "c.png", str(tmp_path / "forced"), overwrite=True), Task("inspect", "d.png")]
    sent = gdask._tasks_to_send(tasks)
    assert [t.overwrite for t in sent] == [False, True, True, False]
    assert all(os.path.isabs(t.input) for t in sent)


def test_an_image_that_keeps_killing_its_workers_fails_alone(tmp_path):
    """A worker over its memory limit is killed by its nanny; after
    allowed-failures deaths the scheduler gives the image up (KilledWorker)
    and the batch still finishes, with that image as a failed row."""
    import dask

    src = tmp_path / "in"
    src.mkdir()
    write_png(src / "small.png", seed=1)
    img, _ = voronoi_image(size=2600, n_regions=4, noise=0.2, seed=3)  # about a gigabyte to segment
    Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)).save(src / "huge.png")
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), \
            distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                                     memory_limit="600MB", **QUIET) as c:
        out = run("segment", src, "-k", "3", "--out", tmp_path / "out", "--scheduler", c.scheduler_address)
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr
    [line] = [line for line in out.stderr.splitlines() if line.startswith("gmmseg: error:")]
    assert "huge.png" in line and "workers processing it alone died once" in line and "2600 x 2600" in line, out.stderr
    assert "run again one at a time" in out.stderr
    summary = json.loads((tmp_path / "out" / "run_summary.json").read_text())
    assert summary["images"] == 2 and summary["failed"] == 1
    assert (tmp_path / "out" / "small" / "labels.png").exists() and not (tmp_path / "out" / "huge").exists()


def test_unreachable_scheduler_or_missing_extra_is_one_line_and_status_2(tmp_path):
    image = write_png(tmp_path / "a.png", seed=0)
    out = run("segment", image, "--out", tmp_path / "out", "--scheduler", "tcp://127.0.0.1:1")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == ["gmmseg: error: cannot reach the Dask scheduler at tcp://127.0.0.1:1: "
                                               "Connection refused"]
    assert not (tmp_path / "out").exists()
    out = run("segment", image, "--out", tmp_path / "out", "--scheduler", "tcp://127.0.0.1:1", "--jobs", "2")
    assert out.returncode == 2 and "--jobs and --scheduler" in out.stderr
    # Without the extra (a 'distributed' that cannot be imported, first on the path):
    fake = tmp_path / "fake" / "distributed"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError(\"No module named 'distributed'\")\n")
    cmd = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "gmmseg"]
    env = cli_env()
    env["PYTHONPATH"] = os.pathsep.join([str(fake.parent), env["PYTHONPATH"]])
    out = subprocess.run(cmd + ["segment", str(image), "--out", str(tmp_path / "out"), "--scheduler", "tcp://127.0.0.1:1"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == ["gmmseg: error: --scheduler needs the dask extra, which is not installed: "
                                               "pip install 'gmmseg[dask]'"]


# ---------------------------------------------------------------------------
# chunked arrays
def _image(height=150, width=230, alpha=False, grey=False, seed=2, regions=4):
    img, _ = voronoi_image(size=max(height, width), n_regions=regions, noise=0.08, seed=seed)
    pixels = (np.clip(img[:height, :width], 0, 1) * 255 + 0.5).astype(np.uint8)
    if grey:
        return np.ascontiguousarray(pixels[:, :, 0])
    if alpha:
        a = np.full((height, width, 1), 255, dtype=np.uint8)
        a[40:70, 100:180] = 0
        pixels = np.concatenate([pixels, a], axis=2)
    return pixels


def _assert_same(result, whole):
    labels, probabilities, log_likelihood = da.compute(result.labels, result.probabilities, result.log_likelihood,
                                                       scheduler="threads")
    np.testing.assert_array_equal(labels, whole.labels)
    np.testing.assert_allclose(probabilities, whole.probabilities, rtol=0, atol=1e-6)
    np.testing.assert_allclose(log_likelihood, whole.log_likelihood, rtol=1e-6, atol=1e-5, equal_nan=True)


@pytest.mark.parametrize("settings, chunks", [
    (dict(smoothing=0.0, spatial_weight=0.0), (40, 60)),             # colour only: no halo
    (dict(smoothing=2.0, spatial_weight=0.5), (40, 60)),             # the defaults: positions and the prior
    (dict(feature_set="color+texture", texture_scales=(1, 2), illumination_sigma=2.0, smoothing=2.0,
          spatial_weight=0.5), (50, 90)),                            # texture: a halo wider than some chunks
])
def test_predict_on_chunks_equals_the_in_memory_result(settings, chunks):
    pixels = _image(alpha=True)
    seg = Segmenter(3, random_state=0, **settings).fit(pixels)
    result = gdask.predict(seg, da.from_array(pixels, chunks=chunks + (4,)), probabilities=True, log_likelihood=True)
    assert result.labels.numblocks[0] > 1 and result.labels.numblocks[1] > 1
    assert result.halo == seg.prediction_halo()
    _assert_same(result, seg.predict(pixels))


def test_predict_grey_texture_and_scaled_floats_on_the_cluster(cluster):
    _, client = cluster
    grey = _image(grey=True)
    seg = Segmenter(2, random_state=0, feature_set="auto", texture_scales=(1, 2), illumination_sigma=2.0).fit(grey)
    assert seg.features.uses_texture  # auto: texture for grey images
    result = gdask.predict(seg, da.from_array(grey, chunks=(40, 70)), log_likelihood=True)
    labels, ll = client.compute([result.labels, result.log_likelihood], sync=True)  # pickled to the workers and back
    whole = seg.predict(grey)
    np.testing.assert_array_equal(labels, whole.labels)
    np.testing.assert_allclose(ll, whole.log_likelihood, rtol=1e-6, atol=1e-5)
    # Floats outside [0, 1] (with a NaN) are scaled by the whole array's range, as load_image scales them.
    floats = _image().astype(np.float64) * 3.0 - 100.0
    floats[5, 7] = np.nan
    seg = Segmenter(3, random_state=0, spatial_weight=0.0).fit(floats)
    labels = gdask.predict(seg, da.from_array(floats, chunks=(50, 50, 3))).labels.compute(scheduler="threads")
    np.testing.assert_array_equal(labels, seg.predict(floats).labels)
    assert labels[5, 7] == -1


def test_fit_sample_reads_a_bounded_sample_of_chunks():
    pixels = _image(height=200, width=200, regions=3)
    image = da.from_array(pixels, chunks=(50, 50, 3))
    seg = gdask.fit_sample(image, n_components=3, spatial_weight=0.0, random_state=0, sample_pixels=5 * 2500)
    assert seg.is_fitted and seg.gmm_.means_.shape == (3, 3)
    again = gdask.fit_sample(image, n_components=3, spatial_weight=0.0, random_state=0, sample_pixels=5 * 2500)
    np.testing.assert_array_equal(seg.gmm_.means_, again.gmm_.means_)  # seeded by random_state
    # The regions are the image's: most pixels agree with a fit on the whole image.
    whole = Segmenter(3, spatial_weight=0.0, random_state=0).fit(pixels).predict(pixels).labels
    labels = gdask.predict(seg, image).labels.compute(scheduler="threads")
    assert np.mean(labels == whole) > 0.9
    # One chunk larger than the sample: a window of it.
    small = gdask.fit_sample(da.from_array(pixels, chunks=(200, 200, 3)), n_components=3, spatial_weight=0.0,
                             random_state=0, sample_pixels=900)
    assert small.is_fitted
    with pytest.raises(ValueError, match="spatial_weight=0"):
        gdask.fit_sample(image, n_components=3, spatial_weight=0.5)
    with pytest.raises(NotFittedError):
        gdask.predict(Segmenter(3), image)


def test_predict_window_matches_the_whole_image_inside_the_halo():
    pixels = _image()
    seg = Segmenter(3, random_state=0, smoothing=2.0, spatial_weight=0.5).fit(pixels)
    halo = seg.prediction_halo()
    assert halo == 3  # three mean-field sweeps, one pixel each
    whole = seg.predict(pixels)
    y0, y1, x0, x1 = 30, 90, 50, 160
    part = seg.predict_window(pixels[y0 - halo:y1 + halo, x0 - halo:x1 + halo], (y0 - halo, x0 - halo), pixels.shape[:2])
    np.testing.assert_array_equal(part.labels[halo:-halo, halo:-halo], whole.labels[y0:y1, x0:x1])
    with pytest.raises(ValueError, match="does not fit"):
        seg.predict_window(pixels[:20, :20], (140, 0), pixels.shape[:2])
