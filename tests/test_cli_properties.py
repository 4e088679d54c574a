"""Property: whatever a user types, `contrastkit train` either trains or fails with one line on
stderr and exit code 2, never a traceback, and never changes a file it did not create."""

import contextlib
import hashlib
import io
import os
import tempfile
import typing
from pathlib import Path

from hypothesis import HealthCheck, given, settings
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
        stdout, stderr = io.StringIO(), io.StringIO()
        previous = os.getcwd()
        os.chdir(root)  # the default run folder, runs/<method>-digits-<time>, lands here
        try:
            with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
                try:
                    cli.main(argv)
                    code = 0
                except SystemExit as exit_:
                    code = exit_.code
        finally:
            os.chdir(previous)
        err = stderr.getvalue()
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
