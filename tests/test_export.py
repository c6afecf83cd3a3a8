"""Exports read back with Pillow / tifffile / scikit-image equal the arrays."""

import json

import numpy as np
import pytest
import tifffile
from PIL import Image
from skimage import io as skio

from gmmseg import Segmenter, load_image
from gmmseg.export import OUTPUTS, export_segmentation, overlay_image, with_transparency


@pytest.fixture
def segmented():
    rng = np.random.RandomState(0)
    rgb = np.zeros((30, 40, 3), np.uint8)
    rgb[:, :20] = [200, 30, 30]
    rgb[:, 20:] = [30, 30, 200]
    rgb = np.clip(rgb + rng.normal(scale=6, size=rgb.shape), 0, 255).astype(np.uint8)
    alpha = np.full((30, 40), 255, np.uint8)
    alpha[:3, :3] = 0
    image = load_image(np.dstack([rgb, alpha]))
    seg = Segmenter(2, random_state=0).fit_predict(image)
    return image, seg


def test_every_file_reads_back(tmp_path, segmented):
    image, seg = segmented
    written = export_segmentation(seg, image, tmp_path / "out", settings={"k": 2})
    names = sorted(p.name for p in written)
    assert names == sorted(["labels.png", "mask_0.png", "mask_1.png", "probabilities.tif", "loglik.tif",
                            "anomaly.png", "overlay.png", "summary.json"])

    labels = Image.open(tmp_path / "out" / "labels.png")
    assert labels.mode == "P"
    values = np.asarray(labels)
    np.testing.assert_array_equal(values, np.where(seg.labels >= 0, seg.labels, 255))
    palette = np.array(labels.getpalette()[:6]).reshape(2, 3)
    np.testing.assert_array_equal(palette, np.rint(seg.component_colors * 255))
    assert labels.info.get("transparency") == 255
    # Other tools: scikit-image reads the palette PNG's indices too.
    assert skio.imread(tmp_path / "out" / "labels.png").shape[:2] == (30, 40)

    for k in range(2):
        mask = np.asarray(Image.open(tmp_path / "out" / f"mask_{k}.png"))
        np.testing.assert_array_equal(mask, np.where(seg.labels == k, 255, 0))

    probs = tifffile.imread(tmp_path / "out" / "probabilities.tif")
    assert probs.dtype == np.float32 and probs.shape == (30, 40, 2)
    np.testing.assert_array_equal(probs, seg.probabilities)
    np.testing.assert_array_equal(skio.imread(tmp_path / "out" / "probabilities.tif"), seg.probabilities)
    loglik = tifffile.imread(tmp_path / "out" / "loglik.tif")
    np.testing.assert_array_equal(loglik, seg.log_likelihood)  # NaN where masked, equal_nan by default

    anomaly = np.asarray(Image.open(tmp_path / "out" / "anomaly.png"))
    np.testing.assert_array_equal(anomaly > 0, seg.anomaly_mask(percentile=1.0))

    overlay = np.asarray(Image.open(tmp_path / "out" / "overlay.png"))
    np.testing.assert_array_equal(overlay, with_transparency(overlay_image(image.to_uint8(), seg.labels,
                                                                           seg.component_colors), image.mask))

    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["image"]["used_pixels"] == 30 * 40 - 9
    assert summary["settings"] == {"k": 2}
    assert [c["pixel_count"] for c in summary["components"]] == np.bincount(seg.labels[seg.mask]).tolist()
    assert summary["anomaly"]["flagged_pixels"] == int(seg.anomaly_mask(percentile=1.0).sum())


def test_refuses_to_overwrite_and_writes_nothing(tmp_path, segmented):
    image, seg = segmented
    out = tmp_path / "out"
    out.mkdir()
    (out / "mask_1.png").write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="nothing was written"):
        export_segmentation(seg, image, out)
    assert sorted(p.name for p in out.iterdir()) == ["mask_1.png"]
    assert (out / "mask_1.png").read_bytes() == b"precious"
    export_segmentation(seg, image, out, overwrite=True)
    assert np.asarray(Image.open(out / "mask_1.png")).shape == (30, 40)


def test_subset_of_outputs(tmp_path, segmented):
    image, seg = segmented
    written = export_segmentation(seg, image, tmp_path, outputs=("labels", "summary"))
    assert sorted(p.name for p in written) == ["labels.png", "summary.json"]
    with pytest.raises(ValueError, match="Unknown outputs"):
        export_segmentation(seg, image, tmp_path / "x", outputs=("labels", "movie"))
    assert set(OUTPUTS) >= {"labels", "masks", "probabilities", "loglik", "anomaly", "overlay", "summary"}


def test_overlay_blends_towards_component_colours():
    rgb = np.zeros((2, 2, 3), np.uint8)
    labels = np.array([[0, -1], [0, 0]])
    out = overlay_image(rgb, labels, np.array([[1.0, 1.0, 1.0]]), opacity=0.5)
    np.testing.assert_array_equal(out[0, 0], [128, 128, 128])
    np.testing.assert_array_equal(out[0, 1], [0, 0, 0])


def test_overlays_of_transparent_images_keep_the_transparency(tmp_path):
    """The colours hidden under a source's transparency never show in an
    overlay: masked pixels come out transparent (and black)."""
    from gmmseg import Segmenter, load_image
    from gmmseg.export import export_segmentation

    rgba = np.zeros((30, 40, 4), dtype=np.uint8)
    rgba[..., 0] = 250  # hidden colour: red
    rgba[:, :20, 3] = 255
    rgba[:, :20, :3] = (20, 200, 20)
    rgba[:10, :20, :3] = (20, 20, 200)
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba).save(path)
    image = load_image(path)
    seg = Segmenter(2, smoothing=0.0, spatial_weight=0.0, random_state=0).fit_predict(image)
    export_segmentation(seg, image, tmp_path / "out", outputs=("overlay",))
    overlay = np.asarray(Image.open(tmp_path / "out" / "overlay.png"))
    assert overlay.shape == (30, 40, 4)
    assert np.all(overlay[:, 20:] == 0) and np.all(overlay[:, :20, 3] == 255)
