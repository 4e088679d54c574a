"""Every method trains from the command line on digits: finite, falling loss; bad settings refused."""

import json
import math
import re

import pytest

from contrastkit.methods import METHODS, list_methods

# Narrow heads and few prototypes keep each run to seconds on two CPU cores; the multi-crop methods
# get two 4x4 local crops so that path runs too.
SMALL = {
    "simclr": [],
    "supcon": [],
    "moco_v2": ["method_options.queue_size=256"],
    "moco_v3": ["hidden_dim=128", "method_options.predictor_hidden_dim=128"],
    "byol": ["hidden_dim=128", "method_options.predictor_hidden_dim=128"],
    "simsiam": ["hidden_dim=128", "projection_dim=128", "method_options.predictor_hidden_dim=32"],
    "barlow_twins": ["hidden_dim=128", "projection_dim=128"],
    "vicreg": ["hidden_dim=128", "projection_dim=128"],
    "swav": ["hidden_dim=128", "method_options.num_prototypes=32", "method_options.num_local_crops=2",
             "method_options.local_crop_size=4", "method_options.freeze_prototypes_epochs=0.5"],
    "dino": ["hidden_dim=128", "method_options.out_dim=256", "method_options.bottleneck_dim=32",
             "method_options.num_local_crops=2", "method_options.local_crop_size=4",
             "method_options.freeze_last_layer_epochs=0.5"],
}



def test_every_registered_image_method_is_covered():
    # The text methods train from the command line in test_text_methods.py.
    assert sorted(SMALL) == [name for name in list_methods() if "image" in METHODS.get(name).modalities]


@pytest.mark.parametrize("method", sorted(SMALL))
def test_method_trains_from_the_cli_with_finite_falling_loss(method, tmp_path, run_cli):
    out = tmp_path / method
    code = run_cli("train", "--method", method, "--dataset", "digits", "--epochs", "3", "--batch-size", "128",
                   "--out", str(out), "evaluate=false", "plot=false", "progress=false", "log_every=1",
                   *SMALL[method])
    assert code == 0
    losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 3 * 11 and all(math.isfinite(loss) for loss in losses)
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first, f"{method}: loss rose from {first:.4f} to {last:.4f}"


@pytest.mark.parametrize("argv, message", [
    (["--method", "moco_v2", "--batch-size", "128", "method_options.queue_size=64"],
     "queue_size \\(64\\) must be at least the global batch size \\(128\\)"),
    (["--method", "simclr", "temperature=0"], "temperature must be > 0"),
    (["--method", "swav", "temperature=-1"], "temperature must be > 0"),
    (["--method", "byol", "method_options.ema_momentum=1.5"], "ema_momentum"),
    (["--method", "moco_v2", "method_options.queue_sise=8192"], "did you mean 'queue_size'"),
    (["--method", "mocov2"], "did you mean 'moco_v2'"),
    (["--method", "simclr", "epochs.x=1"], "only the dict keys"),
])
def test_bad_method_settings_are_refused_up_front(argv, message, tmp_path, capsys, run_cli):
    assert run_cli("train", "--dataset", "digits", "--out", str(tmp_path / "run"), *argv, "progress=false") == 2
    err = capsys.readouterr().err
    assert "contrastkit: error:" in err
    assert re.search(message, err), err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_supcon_on_a_folder_without_classes_is_refused(tmp_path, capsys, run_cli):
    from PIL import Image

    folder = tmp_path / "unlabeled" / "images"
    folder.mkdir(parents=True)
    for index in range(6):
        Image.new("RGB", (8, 8), (index * 40, 0, 0)).save(folder / f"{index}.png")
    assert run_cli("train", "--method", "supcon", "--dataset", str(tmp_path / "unlabeled"), "--out",
                   str(tmp_path / "run"), "image_size=8", "progress=false") == 2
    assert "supcon is supervised and needs class labels" in capsys.readouterr().err
