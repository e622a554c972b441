"""Hostile input: every case ends with exit code 2, exactly one line on stderr, no
traceback, and nothing overwritten (every file under the workspace is byte for byte what it
was, and nothing new appears, except where a case is meant to leave a resumable run)."""

import errno
import hashlib
import io
import json
import os
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tomli_w
import torch
from click.testing import CliRunner
from tiny_runs import TINY_ARGS, CtrlCAt, full_disk_pwrite, tiny_config

from edge_svp.cli import main
from edge_svp.config import tomllib
from edge_svp.errors import Interrupted
from edge_svp.run import fit

IDX_NAMES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte"]  # fmt: skip


def idx(array: np.ndarray) -> bytes:
    header = b"\0\0\x08" + bytes([array.ndim])
    return header + b"".join(d.to_bytes(4, "big") for d in array.shape) + array.tobytes()


def png(height: int, width: int) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(np.zeros((height, width), dtype=np.uint8)).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A finished tiny run and one stopped by Ctrl-C, to copy from."""
    root = tmp_path_factory.mktemp("runs")
    fit(tiny_config(), out=root / "finished")
    with pytest.raises(Interrupted):
        fit(tiny_config(), out=root / "stopped", reporter=CtrlCAt("epoch 1", 2))
    return root


class Workspace:
    """A folder for one case, with the things a case may need put into it."""

    def __init__(self, root: Path, runs: Path, monkeypatch, request):
        self.root, self.runs, self.monkeypatch, self.request = root, runs, monkeypatch, request

    def __truediv__(self, name) -> Path:
        return self.root / name

    def file(self, name: str, data: bytes | str) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return path

    def folder(self, name: str) -> Path:
        (self.root / name).mkdir(parents=True)
        return self.root / name

    def run(self, which: str, config_toml: str | None = None) -> Path:
        """A copy of the finished or stopped run; optionally with another config.toml."""
        path = self.root / which
        shutil.copytree(self.runs / which, path)
        if config_toml is not None:
            (path / "config.toml").write_text(config_toml)
        return path

    def edited_config(self, which: str, section: str, key: str, value) -> Path:
        raw = tomllib.loads((self.runs / which / "config.toml").read_text())
        assert key in raw[section]
        raw[section][key] = value
        return self.run(which, tomli_w.dumps(raw))

    def mnist(self, **files: bytes) -> Path:
        """A data folder of valid tiny IDX files, some replaced by `files`."""
        images, labels = np.zeros((4, 8, 8), dtype=np.uint8), np.arange(4, dtype=np.uint8)
        good = dict(zip(IDX_NAMES, [idx(images), idx(labels)] * 2, strict=True))
        for name, data in {**good, **files}.items():
            self.file(f"mnist-data/{name}", data)
        return self.root / "mnist-data"

    def images(self, sizes: dict[str, tuple[int, int]], zipped: bool = False) -> Path:
        """An image folder (or zip): split/class/image.png of the given (height, width)."""
        entries = {name: png(*size) for name, size in sizes.items()}
        if not zipped:
            for name, data in entries.items():
                self.file(f"images/{name}", data)
            return self.root / "images"
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as zf:
            for name, data in entries.items():
                zf.writestr(name, data)
        return self.file("images.zip", buffer.getvalue())

    def read_only(self, name: str) -> Path:
        """A folder nobody may write to: mode 555, and for root (whom modes do not stop)
        the immutable attribute."""
        path = self.root / name
        path.mkdir()
        path.chmod(0o555)
        self.request.addfinalizer(lambda: path.chmod(0o755))  # runs last: finalizers unwind
        if os.geteuid() == 0:
            if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
                pytest.skip("running as root where chattr +i is not available")
            self.request.addfinalizer(lambda: subprocess.run(["chattr", "-i", str(path)]))
        return path

    def full_disk(self) -> None:
        self.monkeypatch.setattr("edge_svp.memory.activation_cache.os.pwrite", full_disk_pwrite)


TWO_CLASSES = {"train/a/1.png": (6, 6), "train/b/2.png": (6, 6),
               "test/a/3.png": (6, 6), "test/b/4.png": (6, 6)}  # fmt: skip
MIXED_SIZES = {**TWO_CLASSES, "train/b/5.png": (7, 6)}
NOT_SQUARE = {name: (6, 8) for name in TWO_CLASSES}
FIT = ["fit", *TINY_ARGS]
LAYERWISE_ON_DISK = [*FIT, "--schedule", "layerwise", "--host-budget", "1"]
CORRUPT_ZIP = b"PK\x03\x04 this is not a zip"


def imagefolder(w: Workspace, sizes: dict, **kw) -> list[str]:
    return ["--dataset", "imagefolder", "--data-dir", str(w.images(sizes, **kw))]


def ort_export(w: Workspace) -> list[str]:
    pytest.importorskip("onnxruntime.training", reason="the ort extra is not installed")
    out = w / "export"
    result = CliRunner().invoke(
        main,
        ["export", "--profile", "mnist-mlp", "--set", "data.dataset=digits", "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    return ["export", "--profile", "digits-mlp", "--out", str(out)]


def no_cuda(w: Workspace) -> list[str]:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    return [*FIT, "--device", "cuda"]


# (name, arguments from a workspace, what the one line must say, leaves a run behind)
CASES = [
    # sizes and budgets
    ("malformed budget", lambda w: [*FIT, "--mem-budget", "12XB"], "cannot read '12XB' as a memory size"),
    ("negative budget", lambda w: [*FIT, "--mem-budget", "-5MB"], "cannot read '-5MB'"),
    ("zero budget", lambda w: [*FIT, "--mem-budget", "0"], "memory size must be positive"),
    ("malformed host budget", lambda w: [*FIT, "--host-budget", "lots"], "cannot read 'lots'"),
    ("budget too small", lambda w: [*FIT, "--mem-budget", "1KB"], "more than the budget 1000 B"),
    ("backprop below its smallest budget", lambda w: [*FIT, "--method", "bp", "--mem-budget", "1KB"],
     "the smallest budget that works for backprop is"),
    # profiles, settings and options
    ("unknown profile", lambda w: ["fit", "--profile", "digits-mpl"], "did you mean 'digits-mlp'"),
    ("missing profile file", lambda w: ["fit", "--profile", str(w / "none.toml")],
     "profile file not found"),
    ("profile that is not TOML", lambda w: ["fit", "--profile", str(w.file("p.toml", "[train\n"))],
     "is not valid TOML"),
    ("typo in a TOML key", lambda w: ["fit", "--profile", str(w.file("p.toml", "[train]\nepoch = 3\n"))],
     "unknown key 'epoch' in p.toml [train] (did you mean 'epochs'?)"),
    ("typo in a TOML table", lambda w: ["fit", "--profile", str(w.file("p.toml", "[trian]\nepochs = 3\n"))],
     "unknown key 'trian' in p.toml (did you mean 'train'?)"),
    ("wrong type in TOML", lambda w: ["fit", "--profile", str(w.file("p.toml", "[train]\nepochs = 'x'\n"))],
     'p.toml [train].epochs = "x" has the wrong type (expected an integer)'),
    ("a list of the wrong type in TOML", lambda w: ["fit", "--profile", str(w.file("p.toml", "[model]\nkind = 'cnn'\nchannels = [3]\n"))],
     "[model].channels = [3] has the wrong type (expected a list of lists of integers)"),
    ("a setting outside its table", lambda w: ["fit", "--profile", str(w.file("p.toml", "epochs = 3\n"))],
     "unknown key 'epochs' in p.toml (put it under [train])"),
    ("a model setting outside its table", lambda w: ["fit", "--profile", str(w.file("p.toml", "widths = [3]\n"))],
     "unknown key 'widths' in p.toml (put it under [model])"),
    ("typo in a --set key", lambda w: [*FIT, "--set", "svp.betta=1"], "did you mean 'beta'"),
    ("unknown --set table", lambda w: [*FIT, "--set", "trian.epochs=1"], "did you mean 'train'"),
    ("bad --set syntax", lambda w: [*FIT, "--set", "svp.beta"], "must look like SECTION.KEY=VALUE"),
    ("--set of a wrong type", lambda w: [*FIT, "--set", 'train.epochs="many"'], "has the wrong type"),
    ("unknown model kind", lambda w: [*FIT, "--set", "model.kind=rnn"], "unknown model kind 'rnn'"),
    ("unknown option", lambda w: [*FIT, "--epoch", "3"], "'--epochs'"),
    ("negative epochs", lambda w: ["fit", "--epochs", "-1"], "-1 is not in the range x>=1"),
    ("negative epochs by --set", lambda w: [*FIT, "--set", "train.epochs=-1"],
     "epochs must be positive, got -1"),
    ("zero learning rate", lambda w: ["fit", "--lr", "0"], "is not in the range x>0"),
    ("negative checkpoint interval", lambda w: [*FIT, "--set", "train.checkpoint_every=-1"],
     "checkpoint_every must be 0 or more"),
    ("unknown schedule", lambda w: ["fit", "--schedule", "greedy"], "'greedy' is not one of"),
    ("cuda without a GPU", no_cuda, "torch sees no CUDA device"),
    # data
    ("unknown dataset", lambda w: ["fit", "--dataset", "mnits"], "did you mean 'mnist'"),
    ("missing data directory", lambda w: ["fit", "--dataset", "mnist", "--data-dir", str(w / "none")],
     "does not exist"),
    ("data directory without the files", lambda w: ["fit", "--dataset", "mnist", "--data-dir", str(w.folder("empty"))],
     "did not find train-images-idx3-ubyte"),
    ("corrupt IDX header", lambda w: ["fit", "--dataset", "mnist", "--data-dir", str(w.mnist(**{IDX_NAMES[0]: b"\x01\x02\x03\x04junk"}))],
     "is not a uint8 IDX file (bad header)"),
    ("truncated IDX file", lambda w: ["fit", "--dataset", "mnist", "--data-dir", str(w.mnist(**{IDX_NAMES[0]: idx(np.zeros((4, 8, 8), np.uint8))[:-9]}))],
     "is truncated or corrupt"),
    ("IDX .gz that is not gzip", lambda w: ["fit", "--dataset", "mnist", "--data-dir", str(w.mnist(**{IDX_NAMES[0] + ".gz": b"not gzip"}))],
     "Not a gzipped file"),
    ("IDX files of no images", lambda w: ["fit", "--dataset", "mnist", "--data-dir", str(w.mnist(**dict(zip(IDX_NAMES, [idx(np.zeros((0, 8, 8), np.uint8)), idx(np.zeros(0, np.uint8))] * 2, strict=True))))],
     "the training split holds no examples"),
    ("IDX labels outside the classes", lambda w: ["fit", "--dataset", "mnist", "--data-dir", str(w.mnist(**{IDX_NAMES[3]: idx(np.array([0, 1, 200, 3], np.uint8))}))],
     "label 200 in the test split is outside its 10 classes (0 to 9)"),
    ("IDX images and labels disagree", lambda w: ["fit", "--dataset", "mnist", "--data-dir", str(w.mnist(**{IDX_NAMES[1]: idx(np.arange(3, dtype=np.uint8))}))],
     "do not match"),
    ("corrupt zip", lambda w: ["fit", "--dataset", "imagefolder", "--data-dir", str(w.file("d.zip", CORRUPT_ZIP))],
     "is not a readable zip file"),
    ("corrupt CIFAR-10 zip", lambda w: ["fit", "--dataset", "cifar10", "--data-dir", str(w.file("c/cifar10-jpg.zip", CORRUPT_ZIP).parent)],
     "is not a readable zip file"),
    ("corrupt image in a zip", lambda w: [*FIT, "--dataset", "imagefolder", "--data-dir", str(_zip_with_bad_image(w))],
     "cannot decode image"),
    ("images of mixed sizes", lambda w: [*FIT, *imagefolder(w, MIXED_SIZES)], "must share one size"),
    ("train and test images of different sizes", lambda w: [*FIT, *imagefolder(w, {**TWO_CLASSES, "test/a/3.png": (7, 7), "test/b/4.png": (7, 7)})],
     "all images (train and test) must share one size"),
    ("CNN images too small for BatchNorm", lambda w: ["plan", "--profile", "cifar10-cnn-full", "--dataset", "digits"],
     "a BatchNorm layer gets a single value per channel"),
    ("an MLP without blocks", lambda w: [*FIT, "--set", "model.widths=[]"], "widths must list at least one block"),
    ("a CNN without blocks", lambda w: ["fit", "--set", "model.kind=cnn", "--set", "model.channels=[]"],
     "channels must list at least one block"),
    ("a ViT without blocks", lambda w: ["fit", "--set", "model.kind=vit", "--set", "model.layers_per_block=[]"],
     "layers_per_block must list at least one block"),
    ("image folder without a test split", lambda w: [*FIT, *imagefolder(w, {"train/a/1.png": (6, 6)})],
     "found splits: ['train']"),
    ("image size that does not fit the model", lambda w: ["fit", *imagefolder(w, TWO_CLASSES, zipped=True), "--set", "model.kind=vit"],
     "image size 6 is not a multiple of patch_size 4"),
    ("non-square images for a ViT", lambda w: ["fit", *imagefolder(w, NOT_SQUARE), "--set", "model.kind=vit"],
     "needs square (C, H, W) images"),
    # run directories
    ("existing run directory", lambda w: [*FIT, "--out", str(w.run("finished"))],
     "already exists and is not empty (continue it with --resume"),
    ("overwrite of a folder that is not a run", lambda w: [*FIT, "--out", str(w.file("mine/keep.txt", "x").parent), "--overwrite"],
     "refusing to overwrite"),
    ("run directory that is a file", lambda w: [*FIT, "--out", str(w.file("f.txt", "x"))], "is a file"),
    ("read-only output directory", lambda w: [*FIT, "--out", str(w.read_only("ro") / "run")], "cannot write to"),
    ("read-only output directory, overwrite", lambda w: [*FIT, "--out", str(w.read_only("ro")), "--overwrite"],
     "cannot write to"),
    ("full disk while caching", lambda w: (w.full_disk(), [*LAYERWISE_ON_DISK, "--out", str(w / "run")])[1],
     "No space left on device; then continue with: edge-svp fit --resume"),
    # resuming and reading runs
    ("resume of a folder that is not a run", lambda w: ["fit", "--resume", str(w.folder("x"))],
     "it is not a run directory"),
    ("resume of a missing folder", lambda w: ["fit", "--resume", str(w / "none")], "it is not a run directory"),
    ("resume of a finished run", lambda w: ["fit", "--resume", str(w.run("finished"))], "there is nothing to resume"),
    ("resume with other options", lambda w: ["fit", "--resume", str(w.run("stopped")), "--epochs", "5", "--set", "svp.beta=1"],
     "drop --epochs, --set"),
    ("resume with a corrupt config.toml", lambda w: ["fit", "--resume", str(w.run("stopped", "epochs = [\n"))],
     "cannot read configuration"),
    ("resume with an edited config.toml", lambda w: ["fit", "--resume", str(w.edited_config("stopped", "optim", "lr", 0.02))],
     "was trained with: optim.lr = 0.02, was 0.01"),
    ("resume with an edited train_limit", lambda w: ["fit", "--resume", str(w.edited_config("stopped", "data", "train_limit", 100))],
     "was trained with: data.train_limit = 100, was 200"),
    ("resume of an ORT run", lambda w: ["fit", "--resume", str(_ort_run(w))], "does not resume"),
    ("checkpoint from a different model", lambda w: ["eval", str(w.edited_config("finished", "model", "widths", [16, 16]))],
     "does not match this network"),
    ("eval of a corrupt config.toml", lambda w: ["eval", str(w.run("finished", "[model\n"))], "cannot read configuration"),
    ("eval with every checkpoint damaged", lambda w: ["eval", str(_damage_checkpoints(w.run("finished")))],
     "no usable checkpoint"),
    ("eval of a run without a checkpoint", lambda w: ["eval", str(w.file("r/config.toml", "").parent)], "has no checkpoint yet"),
    ("eval of a folder that is not a run", lambda w: ["eval", str(w.root)], "is not a run directory"),
    ("export directory that does not match the profile", ort_export, "holds an export of profile mnist-mlp"),
    # inputs to predict
    ("predict on an empty .npy", lambda w: ["predict", str(w.run("finished")), str(w.file("e.npy", b""))],
     "e.npy is empty (0 bytes)"),
    ("predict on an empty .npy with ONNX Runtime", lambda w: ["predict", str(_inference_export(w)), str(w.file("e.npy", b"")), "--backend", "ort"],
     "e.npy is empty (0 bytes)"),
    ("predict with an empty inference.json", lambda w: ["predict", str(_damaged_export(w, "inference.json", b"")), str(_npy(w, "x.npy", np.zeros((8, 8), np.uint8))), "--backend", "ort"],
     "inference.json: Expecting value"),
    ("predict with a damaged model.onnx", lambda w: ["predict", str(_damaged_export(w, "model.onnx", b"\x08\x07garbage")), str(_npy(w, "x.npy", np.zeros((8, 8), np.uint8))), "--backend", "ort"],
     "cannot load"),
    ("predict on an array of no images", lambda w: ["predict", str(w.run("finished")), str(_npy(w, "none.npy", np.zeros((0, 8, 8), np.uint8)))],
     "none.npy holds no images"),
    ("predict on a truncated .npy", lambda w: ["predict", str(w.run("finished")), str(w.file("t.npy", _npy_bytes(np.zeros((3, 8, 8), np.uint8))[:60]))],
     "cannot read"),
    ("predict on an empty IDX file", lambda w: ["predict", str(w.run("finished")), str(w.file("x-ubyte", b""))],
     "x-ubyte is empty (0 bytes)"),
]  # fmt: skip


LEAVE_A_RUN = {"full disk while caching"}


def _npy_bytes(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array)
    return out.getvalue()


def _npy(w: Workspace, name: str, array: np.ndarray) -> Path:
    return w.file(name, _npy_bytes(array))


def _inference_export(w: Workspace) -> Path:
    pytest.importorskip("onnxruntime", reason="the ort extra is not installed")
    out = w / "inference"
    args = ["export", str(w.runs / "finished"), "--inference", "--out", str(out)]
    assert CliRunner().invoke(main, args).exit_code == 0
    return out


def _damaged_export(w: Workspace, name: str, data: bytes) -> Path:
    export = _inference_export(w)
    (export / name).write_bytes(data)
    return export


def _zip_with_bad_image(w: Workspace) -> Path:
    path = w.images(TWO_CLASSES, zipped=True)
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("train/a/bad.png", b"\x89PNG garbage")
    return path


def _ort_run(w: Workspace) -> Path:
    run = w.run("stopped")
    w.file("stopped/ort/manifest.json", "{}")  # what `fit --backend ort` leaves
    return run


def _damage_checkpoints(run: Path) -> Path:
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        (run / name).write_bytes((run / name).read_bytes()[:1000])
    return run


def snapshot(root: Path) -> dict[str, str]:
    """Every path under `root`, with its content's digest (folders: 'dir')."""

    def digest(p: Path) -> str:
        return hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"

    return {str(p.relative_to(root)): digest(p) for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize(
    "make_args, message", [pytest.param(args, msg, id=name) for name, args, msg in CASES]
)
def test_hostile_input_is_refused_in_one_line(
    make_args, message, runs, tmp_path, monkeypatch, request
):
    workspace = Workspace(tmp_path / "workspace", runs, monkeypatch, request)
    workspace.root.mkdir()
    monkeypatch.chdir(workspace.root)  # a default run directory would land in the snapshot
    args = make_args(workspace)
    before = snapshot(workspace.root)
    result = CliRunner().invoke(main, args)
    stopped_training = request.node.callspec.id in LEAVE_A_RUN
    assert result.exit_code == (3 if stopped_training else 2), result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("edge-svp: error: ") and message in lines[0], lines[0]
    assert "Traceback" not in result.output
    after = snapshot(workspace.root)
    if stopped_training:  # stopped on the error; it can go on
        assert before.items() <= after.items()
    else:
        assert after == before


def test_there_are_at_least_25_cases():
    assert len({name for name, _, _ in CASES}) == len(CASES) >= 25


def numeric_settings() -> list[tuple[list[str], str, str]]:
    """(the options that select the model kind, KEY, VALUE) for every numeric setting and
    every way it can be wrong: not a number, negative, non-finite, of the wrong type."""
    import dataclasses
    import typing

    from edge_svp.config import MODEL_OPTIONS, RunConfig

    config, cases = RunConfig(), []
    sections = {name: getattr(config, name) for name in ("data", "svp", "optim", "train")}
    sections |= {f"model:{kind}": options() for kind, options in MODEL_OPTIONS.items()}
    for name, section in sections.items():
        kind_options = ["--set", f"model.kind={name.split(':')[1]}"] if ":" in name else []
        key_section = "model" if ":" in name else name
        for f in dataclasses.fields(section):
            hint = str(typing.get_type_hints(type(section))[f.name])
            if "int" not in hint and "float" not in hint:
                continue
            wrap = (lambda v: f"[{v}]") if "list[list" not in hint and "list" in hint else (
                (lambda v: f"[[{v}]]") if "list[list" in hint else (lambda v: v))  # fmt: skip
            for value in ("nan", "-1", "-inf", '"text"'):
                cases.append((kind_options, f"{key_section}.{f.name}", wrap(value)))
    return cases


@pytest.mark.parametrize("kind, key, value", numeric_settings())
def test_every_numeric_setting_refuses_what_it_cannot_be(kind, key, value, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["fit", *kind, "--set", f"{key}={value}", "--out", str(out)])
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith("edge-svp: error: ") and key.split(".")[1] in line, line
    assert not out.exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "model.widths=[10000000000]"], "make the model, svp.proj_dim or the batch smaller"),
        (["--set", "svp.proj_dim=1000000000000"], "make the model, svp.proj_dim or the batch smaller"),
        (["--batch-size", "1000000000000"], "make the model, svp.proj_dim or the batch smaller"),
        (["--seed", str(2**70)], "seed must be at most"),
        (["--set", 'model.kind="cnn"', "--set", "model.channels=[[8], []]"], "cnn block 2 has no convolution"),
        (["--set", 'model.kind="cnn"', "--set", "model.norm=layer"], "unknown cnn norm 'layer'"),
    ],
)  # fmt: skip
def test_settings_this_machine_cannot_hold_are_one_line(args, message, tmp_path):
    result = CliRunner().invoke(main, ["fit", *args, "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.splitlines()
    assert message in line, line
    assert result.stdout == ""  # nothing announced before the refusal


@pytest.mark.parametrize("command", [
    ["export", "--profile", "digits-mlp", "--out"],
    ["report", "RUN", "--out"],
    ["fit", "--epochs", "1", "--out"],
])  # fmt: skip
@pytest.mark.parametrize("where", ["/proc/edge-svp", "READ_ONLY/sub"])
def test_every_command_refuses_an_output_it_cannot_write(command, where, runs, tmp_path):
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o500)
    if os.geteuid() == 0 and where.startswith("READ_ONLY"):
        pytest.skip("root writes into read-only folders")
    out = where.replace("READ_ONLY", str(read_only))
    args = [str(runs / "finished") if a == "RUN" else a for a in command]
    result = CliRunner().invoke(main, [*args, out])
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith("edge-svp: error: ") and ("cannot" in line), line


def _fill_disk_after_part(write):
    """`write(obj, path)` that leaves half a file at `path`, then finds the disk full."""

    def full(obj, path, *args, **kwargs):
        write(obj, path, *args, **kwargs)
        Path(path).write_bytes(Path(path).read_bytes()[:100])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    return full


@pytest.mark.parametrize("command, module, writer", [
    (["export", "RUN", "--out"], "onnxruntime.training", "onnx.save"),
    (["export", "RUN", "--inference", "--out"], "onnxruntime.training", "onnx.save"),
    (["report", "RUN", "--out"], "matplotlib.figure", "Figure.savefig"),
])  # fmt: skip
@pytest.mark.parametrize("existing", [False, True])
def test_a_full_disk_leaves_no_partial_export_or_report(
    command, module, writer, existing, runs, tmp_path, monkeypatch
):
    """A full disk at any file of an export or a report: one line, exit 2, and the output
    folder as it was (absent, or holding the last complete output and the user's files)."""
    owner = pytest.importorskip(module, reason="its extra is not installed")
    *path, name = writer.split(".")
    for part in path:
        owner = getattr(owner, part) if part != "onnx" else pytest.importorskip("onnx")
    out = tmp_path / "out"
    args = [str(runs / "finished") if a == "RUN" else a for a in command] + [str(out)]
    if existing:
        assert CliRunner().invoke(main, args).exit_code == 0
        (out / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    monkeypatch.setattr(owner, name, _fill_disk_after_part(getattr(owner, name)))
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"edge-svp: error: cannot write {out}") and "no space left" in line
    assert snapshot(tmp_path) == before


def test_an_end_of_file_is_not_reported_as_ctrl_c(runs, tmp_path, monkeypatch):
    """Click reports EOFError as Ctrl-C (exit 130); from a reader it is a bug to show."""

    def reader_bug(*args):
        raise EOFError("No data left in file")

    monkeypatch.setattr("edge_svp.predict.predict_files", reader_bug)
    result = CliRunner().invoke(main, ["predict", str(runs / "finished"), str(tmp_path)])
    assert result.exit_code == 1 and "interrupted" not in result.output
    assert isinstance(result.exception, RuntimeError)


def test_shipped_profiles_read_their_data_from_edge_svp_data(tmp_path, monkeypatch):
    from edge_svp.config import load_profile
    from edge_svp.data import load_data

    w = Workspace(tmp_path, None, monkeypatch, None)
    monkeypatch.setenv("EDGE_SVP_DATA", str(w.mnist()))
    monkeypatch.chdir(w.folder("elsewhere"))
    dataset, _ = load_data(load_profile("mnist-mlp").data)
    assert len(dataset.y_train) == 4


def test_a_relative_data_dir_is_the_profiles_not_the_current_folders(tmp_path, monkeypatch):
    from edge_svp.config import load_profile
    from edge_svp.data import load_data

    w = Workspace(tmp_path, None, monkeypatch, None)
    w.mnist()
    base = w.file("profiles/base.toml", '[data]\ndataset = "mnist"\ndata_dir = "../mnist-data"\n')
    mine = w.file("mine/p.toml", f'extends = "{base}"\n[train]\nepochs = 1\n')
    monkeypatch.chdir(w.folder("elsewhere"))
    dataset, _ = load_data(load_profile(str(mine)).data)
    assert len(dataset.y_test) == 4


def _folder_warnings(args, tmp_path) -> tuple[list[str], dict]:
    """fit's warnings, and its summary, on an image folder."""
    result = CliRunner().invoke(main, [*FIT, *args, "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    warned = [line for line in result.stderr.splitlines() if line.startswith("edge-svp: warning")]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    return warned, summary


def test_a_single_class_is_warned_about(tmp_path, monkeypatch, request):
    w = Workspace(tmp_path, None, monkeypatch, request)
    one = {"train/a/1.png": (6, 6), "train/a/2.png": (6, 6), "test/a/3.png": (6, 6)}
    warned, _ = _folder_warnings(imagefolder(w, one), tmp_path)
    assert warned == [f"edge-svp: warning: dataset 'imagefolder' in {w / 'images'}: the training "
                      "split has a single class ('a'): every prediction is that class, and "
                      "accuracy says nothing"]  # fmt: skip


@pytest.mark.parametrize("zipped", [False, True])
def test_images_in_sub_folders_of_a_class_are_used(tmp_path, monkeypatch, request, zipped):
    w = Workspace(tmp_path, None, monkeypatch, request)
    nested = {**TWO_CLASSES, "train/a/2024/5.png": (6, 6), "train/b/x/y/6.png": (6, 6)}
    warned, summary = _folder_warnings(imagefolder(w, nested, zipped=zipped), tmp_path)
    assert warned == [] and summary["train_examples"] == 4


def test_files_left_out_and_empty_class_folders_are_counted(tmp_path, monkeypatch, request):
    w = Workspace(tmp_path, None, monkeypatch, request)
    folder = w.images(TWO_CLASSES)
    w.file("images/train/a/notes.txt", "mine")
    w.file("images/README.md", "mine")
    w.folder("images/train/c")
    warned, summary = _folder_warnings(["--dataset", "imagefolder", "--data-dir", str(folder)],
                                       tmp_path)  # fmt: skip
    assert warned == [
        f"edge-svp: warning: {folder}: left out 2 files that are not images in a split/class/ "
        "folder (e.g. README.md)",
        f"edge-svp: warning: {folder}: left out 1 class folders that hold no images: train/c",
    ]
    assert summary["train_examples"] == 2


def test_a_zip_with_archivers_metadata_trains(tmp_path, monkeypatch, request):
    """macOS's Archive Utility adds __MACOSX/ with ._ files, Finder .DS_Store; some Windows
    archivers write backslashes."""
    w = Workspace(tmp_path, None, monkeypatch, request)
    path = w.images(TWO_CLASSES, zipped=True)
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("__MACOSX/train/a/._1.png", b"\0\5\26\7 AppleDouble")
        zf.writestr("train/.DS_Store", b"\0\0\0\1Bud1")
        zf.writestr("test/b/", b"")  # a folder entry, as zip -r writes them
        zf.writestr("train\\b\\7.png", png(6, 6))  # as some Windows archivers name members
    warned, summary = _folder_warnings(["--dataset", "imagefolder", "--data-dir", str(path)],
                                       tmp_path)  # fmt: skip
    assert warned == [] and summary["train_examples"] == 3


def test_overwrite_removes_only_what_a_run_wrote(runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs / "finished", run)
    (run / "notes.txt").write_text("mine")
    (run / "my_plots").mkdir()
    (run / "my_plots" / "loss.png").write_bytes(b"mine")
    (run / "cache").mkdir()  # what a layerwise run leaves while it trains
    result = CliRunner().invoke(main, [*FIT, "--epochs", "1", "--out", str(run), "--overwrite"])
    assert result.exit_code == 0, result.output
    assert (run / "notes.txt").read_text() == "mine"
    assert (run / "my_plots" / "loss.png").read_bytes() == b"mine"
    assert not (run / "cache").exists()
    assert json.loads((run / "summary.json").read_text())["epochs"] == 1


@pytest.mark.parametrize("command", [
    [*FIT, "--overwrite", "--out", "RUN"],  # two fits into one folder
    ["fit", "--resume", "RUN"],  # two resumes of one run
])  # fmt: skip
def test_a_second_writer_of_a_run_directory_is_refused(command, runs, tmp_path):
    from edge_svp.rundir import RunDir

    run = tmp_path / "run"
    shutil.copytree(runs / "stopped", run)
    before = snapshot(run)
    args = [str(run) if a == "RUN" else a for a in command]
    owner = RunDir(run)
    owner.lock()  # as another process that trains in it
    try:
        result = CliRunner().invoke(main, args)
    finally:
        owner.unlock()
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.splitlines()
    assert line == (f"edge-svp: error: run directory {run} is in use by another edge-svp "
                    "process (a fit, a resume, or an eval, export or predict reading it); "
                    "wait for it to finish")  # fmt: skip
    assert snapshot(run) == before
    assert CliRunner().invoke(main, args).exit_code == 0  # once the owner is done


def test_eval_of_a_run_that_is_training_now_says_so(runs, tmp_path):
    from edge_svp.rundir import RunDir

    owner = RunDir(runs / "stopped")
    owner.lock()
    try:
        result = CliRunner().invoke(main, ["eval", str(runs / "stopped"), "--json"])
    finally:
        owner.unlock()
    assert result.exit_code == 0, result.output
    assert "it is training now" in json.loads(result.stdout)["unfinished"]


def test_eval_and_export_of_an_unfinished_run_say_so_and_record_it(runs, tmp_path):
    stopped, finished = runs / "stopped", runs / "finished"
    result = CliRunner().invoke(main, ["eval", str(stopped), "--json"])
    assert result.exit_code == 0, result.output
    unfinished = json.loads(result.stdout)["unfinished"]
    assert unfinished == ("it stopped before its end; these are the weights of the checkpoint "
                          "at epoch 1, step 3, of 2 epochs")  # fmt: skip
    assert result.stderr == f"edge-svp: warning: {stopped} is unfinished: {unfinished}\n"
    done = CliRunner().invoke(main, ["eval", str(finished), "--json"])
    assert json.loads(done.stdout)["unfinished"] is None and done.stderr == ""
    pytest.importorskip("onnxruntime.training", reason="the ort extra is not installed")
    for args, record in [(["--inference"], "inference.json"), ([], "manifest.json")]:
        out = tmp_path / record
        result = CliRunner().invoke(main, ["export", str(stopped), *args, "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert result.stderr == f"edge-svp: warning: {stopped} is unfinished: {unfinished}\n"
        assert json.loads((out / record).read_text())["unfinished"] == unfinished


def test_the_suite_never_writes_the_users_cache():
    from edge_svp.data.cache import cache_dir

    assert cache_dir().is_relative_to(tempfile.gettempdir())


def test_a_full_cache_disk_leaves_no_temporary_file(tmp_path, monkeypatch):
    from edge_svp.data.cache import cached_arrays

    monkeypatch.setenv("EDGE_SVP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("edge_svp.data.cache.np.savez", _savez_on_a_full_disk)
    source = tmp_path / "source.bin"
    source.write_bytes(b"x")
    arrays = cached_arrays("d", [source], lambda: {"x": np.arange(3)})
    assert arrays["x"].tolist() == [0, 1, 2]  # the run goes on without its cache entry
    assert list((tmp_path / "cache").iterdir()) == []


def _savez_on_a_full_disk(file, **arrays) -> None:
    file.write(b"\0" * 1000)
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_one_zip_is_decoded_and_cached_once_under_any_dataset_name(tmp_path, monkeypatch):
    from edge_svp.data.imagefolder import load_image_folder

    monkeypatch.setenv("EDGE_SVP_CACHE", str(tmp_path / "cache"))
    w = Workspace(tmp_path, None, monkeypatch, None)
    path = w.images(TWO_CLASSES, zipped=True)
    first, second = load_image_folder(path, "cifar10"), load_image_folder(path)
    assert torch.equal(first.x_train, second.x_train)
    assert len(list((tmp_path / "cache").iterdir())) == 1


def test_a_resumed_runs_wall_time_counts_the_time_before_its_checkpoint(runs, tmp_path):
    from edge_svp.checkpoint import CheckpointStore

    run = tmp_path / "run"
    shutil.copytree(runs / "stopped", run)
    before = CheckpointStore(run).read()["wall_seconds"]
    assert before > 0
    summary = fit(resume=run)
    assert summary["wall_seconds"] >= before


def test_predictions_on_a_full_disk_leave_no_file(runs, tmp_path, monkeypatch):
    from edge_svp import faults

    monkeypatch.setattr(faults, "_passed", {})
    monkeypatch.setenv(faults.FULL_DISK_ENV, "write:1")
    inputs = _npy(
        Workspace(tmp_path, runs, monkeypatch, None), "x.npy", np.zeros((2, 8, 8), np.uint8)
    )
    out = tmp_path / "out" / "predictions.csv"
    out.parent.mkdir()
    result = CliRunner().invoke(
        main, ["predict", str(runs / "finished"), str(inputs), "--out", str(out)]
    )
    assert result.exit_code == 2, result.output
    assert result.stderr == f"edge-svp: error: cannot write {out}: no space left on device\n"
    assert list(out.parent.iterdir()) == []


def test_report_of_an_unfinished_run_says_how_to_go_on(runs, tmp_path):
    result = CliRunner().invoke(
        main, ["report", str(runs / "stopped"), "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 2, result.output
    assert f"continue it with edge-svp fit --resume {runs / 'stopped'}" in result.stderr
    assert not (tmp_path / "r").exists()
