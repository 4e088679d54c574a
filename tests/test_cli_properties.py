"""Properties: whatever a user types, `contrastkit train` either trains or fails with one line on
stderr and exit code 2, never a traceback, and never changes a file it did not create; and however
run folders are moved, copied and renamed between commands, a command changes files only in the
folder named on its command line."""

import contextlib
import hashlib
import io
import os
import shutil
import tempfile
import typing
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from contrastkit import cli
from contrastkit.augment import list_presets
from contrastkit.config import CHOICES, FIELDS, Config
from contrastkit.methods import list_methods
from contrastkit.models import HEADS

# Keys whose random values could make one example train for minutes; the command fixes them last.
FIXED = {"dataset": "digits", "epochs": "1", "batch_size": "256", "image_size": "8", "backbone": "small_cnn",
         "evaluate": "false", "plot": "false", "progress": "false", "device": "cpu", "compile": "false",
         "data_root": "null"}
KEYS = sorted(set(FIELDS) - set(FIXED) - {"out"}) + ["temprature", "method_options.queue_size",
                                                    "preset_options.jitter_strength", "lr.x", ""]
# What a user might write after `=`: numbers in every YAML spelling, names, structures, junk.
VALUES = st.one_of(
    st.sampled_from(["0", "1", "-1", "2", "64", "0.5", "1e-3", "1e999", ".nan", ".inf", "-.inf", "true", "null",
                     "", "[1, 2]", "{a: 1}", "{queue_size: 8}", "'x'", "simclr", "dino", "swav", "moco_v2",
                     "lars", "adamw", "dot", "mlp3", "simclr_imagenet", "mnist", "{", "]", ":", "a: b: c"]),
    st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=6),
)
# Values of the right type for their key reach training, where the deeper failures are.
TYPED = {
    float: ["0", "0.5", "1e-3", "2", "-1", ".nan", "1e999", "1e-300", "50"],
    int: ["0", "1", "2", "16", "64", "-3"],
    bool: ["true", "false"],
    dict: ["{}", "{queue_size: 8}", "{num_prototypes: 4}", "{jitter_strength: 0.3}", "{degrees: 90}",
           "{min_scale: 0.9}", "{ema_momentum: 1.5}", "{num_local_crops: 2, local_crop_size: 4}"],
}
NAMES = {"method": list_methods(), "preset": list_presets(), "head": list(HEADS), **CHOICES}


def typed_value(key: str) -> st.SearchStrategy[str]:
    if key in NAMES:
        return st.sampled_from([*NAMES[key], "nonsense"])
    annotation = typing.get_type_hints(Config)[key]
    kinds = typing.get_args(annotation) or (annotation,)
    pool = [value for kind in kinds for value in TYPED.get(typing.get_origin(kind) or kind, [])]
    return st.sampled_from(pool or ["x"])


TYPED_OVERRIDE = st.sampled_from(sorted(set(FIELDS) - set(FIXED) - {"out", "data_root"})).flatmap(
    lambda key: typed_value(key).map(lambda value: f"{key}={value}"))
JUNK_OVERRIDE = st.tuples(st.sampled_from(KEYS), VALUES).map(lambda kv: f"{kv[0]}={kv[1]}")
OVERRIDES = st.lists(st.one_of(TYPED_OVERRIDE, TYPED_OVERRIDE, JUNK_OVERRIDE), max_size=4)
# Mostly no --config and a fresh folder, so that most examples get as far as training.
CONFIGS = st.sampled_from(["none"] * 6 + ["missing", "folder", "binary", "not_utf8", "list", "yaml"])
OUTS = st.sampled_from(["fresh"] * 3 + ["default", "user_folder", "user_file", "cwd"])


def snapshot(root: Path) -> dict[str, str]:
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in root.rglob("*") if path.is_file()}


def make_sandbox(root: Path, config_kind: str, overrides: list[str]) -> Path | None:
    """A user's working folder: a project folder with files, a file, and the --config to pass."""
    (root / "project").mkdir()
    (root / "project" / "notes.txt").write_text("mine")
    (root / "project" / "config.yaml").write_text("lr: 0.1\n")
    (root / "data.bin").write_bytes(os.urandom(64))
    config = root / "given.yaml"
    if config_kind == "none":
        return None
    if config_kind == "folder":
        config.mkdir()
    elif config_kind == "binary":
        config.write_bytes(b"\x00\x01\x02lr: \x00")
    elif config_kind == "not_utf8":
        config.write_bytes(b"lr: 0.1\nmethod: \xff\n")
    elif config_kind == "list":
        config.write_text("- 1\n- 2\n")
    elif config_kind == "yaml":
        config.write_text("".join(f"{item.replace('=', ': ', 1)}\n" for item in overrides if "=" in item))
    return config


@contextlib.contextmanager
def ctrl_c_after_first_epoch():
    """Ctrl-C as the second epoch starts, the first one checkpointed."""
    from contrastkit.train import Trainer

    run_epoch = Trainer._run_epoch

    def interrupt_the_second_epoch(self, epoch, writer):
        if epoch == 1:
            raise KeyboardInterrupt
        run_epoch(self, epoch, writer)

    Trainer._run_epoch = interrupt_the_second_epoch
    try:
        yield
    finally:
        Trainer._run_epoch = run_epoch


def run_command(argv: list[str], cwd: Path, interrupt: bool = False) -> tuple[int, str]:
    """`contrastkit ARGV` run in ``cwd`` (Ctrl-C as its second epoch starts, with ``interrupt``):
    its exit code and stderr."""
    stdout, stderr = io.StringIO(), io.StringIO()
    previous = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr), \
                (ctrl_c_after_first_epoch() if interrupt else contextlib.nullcontext()):
            try:
                cli.main(argv)
                code = 0
            except SystemExit as exit_:
                code = exit_.code
    finally:
        os.chdir(previous)
    return code, stderr.getvalue()


@settings(max_examples=80, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(overrides=OVERRIDES, config_kind=CONFIGS, out_kind=OUTS, flags_first=st.booleans())
def test_any_command_line_trains_or_fails_in_one_line_and_touches_no_other_file(overrides, config_kind, out_kind,
                                                                                flags_first):
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        config = make_sandbox(root, config_kind, overrides)
        out = {"fresh": root / "fresh-run", "default": None, "user_folder": root / "project",
               "user_file": root / "data.bin", "cwd": root}[out_kind]
        before = snapshot(root)
        flags = (["--config", str(config)] if config else []) + (["--out", str(out)] if out else [])
        fixed = [f"{key}={value}" for key, value in FIXED.items()]
        argv = ["train", *flags, *overrides, *fixed] if flags_first else ["train", *overrides, *flags, *fixed]
        code, err = run_command(argv, root)  # the default run folder, runs/<method>-digits-<time>, lands in root
        assert code in (0, 2), f"{argv}: exit {code}: {err}"
        assert "Traceback" not in err, f"{argv}: {err}"
        if code == 2:
            assert err.startswith("contrastkit: error: ") and err.count("\n") == 1, f"{argv}: {err!r}"
        after = snapshot(root)
        for name, digest in before.items():
            assert after.get(name) == digest, f"{argv}: changed or removed {name}"
        fresh = [name for name in after if name not in before]
        allowed = ("fresh-run/", "runs/")
        assert all(name.startswith(allowed) for name in fresh), f"{argv}: wrote {fresh}"


# ----------------------------------------------------------------------------- run folders moved about

# A run of two epochs of two steps, evaluated and plotted only when asked (eval, plot).
RUN_ARGS = ["--dataset", "digits", "--epochs", "2", "--batch-size", "512", "--device", "cpu", "progress=false",
            "evaluate=false", "plot=false", "embedding_method=pca", "plot_points=200"]
FOLDERS = st.sampled_from(["a", "b", "c"])
# How the folder is named on the command line: absolute, relative to the working folder, or
# relative from a sibling of it.
SPELLINGS = st.sampled_from(["absolute", "relative", "from_sibling"])
MOVES = st.tuples(st.sampled_from(["copy", "move"]), FOLDERS, FOLDERS)
STEPS = st.one_of(
    st.tuples(st.just("train"), FOLDERS, SPELLINGS, st.booleans()),  # the flag: Ctrl-C after epoch 1
    st.tuples(st.sampled_from(["resume", "resume", "eval", "plot", "embed"]), FOLDERS, SPELLINGS),
    MOVES, MOVES,
)


@settings(max_examples=10, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(STEPS, min_size=2, max_size=6))
# The moves users made in the field, every time: a copy resumed from another folder, then used; a
# renamed run resumed while a new run holds its old name.
@example(steps=[("copy", "b", "c"), ("resume", "c", "from_sibling"), ("embed", "c", "relative"),
                ("eval", "c", "absolute"), ("plot", "c", "relative")])
@example(steps=[("move", "b", "c"), ("train", "b", "relative", True), ("resume", "c", "absolute"),
                ("resume", "b", "from_sibling"), ("embed", "b", "absolute")])
def test_moved_copied_and_renamed_run_folders_change_only_the_folder_named(steps):
    # Every example starts from a finished run (a) and one stopped after its first epoch (b).
    steps = [("train", "a", "relative", False), ("train", "b", "absolute", True), *steps]
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        (root / "work").mkdir()
        (root / "sibling").mkdir()
        (root / "notes.txt").write_text("mine")
        for step in steps:
            if step[0] in ("copy", "move"):
                source, target = root / "work" / step[1], root / "work" / step[2]
                if source.is_dir() and not target.exists():
                    (shutil.copytree if step[0] == "copy" else shutil.move)(source, target)
                continue
            command, name, spelling = step[:3]
            folder = root / "work" / name
            cwd, spelled = {"absolute": (root, str(folder)), "relative": (root / "work", name),
                            "from_sibling": (root / "sibling", f"../work/{name}")}[spelling]
            outputs = [root / "embeddings" / f"{name}.npy", root / "embeddings" / f"{name}_labels.npy"]
            argv = {"train": ["train", *RUN_ARGS, "--out", spelled],
                    "resume": ["train", "--out", spelled, "--resume"],
                    "eval": ["eval", spelled, "--protocol", "knn"],
                    "plot": ["plot", spelled],
                    "embed": ["embed", spelled, "--out", str(outputs[0]), "--overwrite"]}[command]
            interrupt = command == "train" and step[3]
            before = snapshot(root)
            code, err = run_command(argv, cwd, interrupt)
            assert code in ((130, 2) if interrupt else (0, 2)), f"{steps}: {argv}: exit {code}: {err}"
            assert "Traceback" not in err, f"{argv}: {err}"
            if code == 2:
                assert err.startswith("contrastkit: error: ") and err.count("\n") == 1, f"{argv}: {err!r}"
            after = snapshot(root)
            named = str(folder.relative_to(root)) + os.sep
            allowed = [named] + ([str(path.relative_to(root)) for path in outputs] if command == "embed" else [])
            changed = sorted(path for path in set(before) | set(after) if before.get(path) != after.get(path))
            assert all(path.startswith(tuple(allowed)) for path in changed), f"{steps}: {argv} changed {changed}"
