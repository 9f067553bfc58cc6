"""``stnkit register``: outputs, one-line errors, overwrite safety."""

import json

import numpy as np
import pytest

from stnkit.cli import main
from stnkit.cli import register as cli_register
from stnkit.data.folder import png_bytes
from stnkit.nn.similarity import SIMILARITIES
from stnkit.registration.core import OPTIMIZERS, REGISTRATION_TRANSFORMS


def blobs(dx):
    yy, xx = np.mgrid[0:24, 0:28].astype(float)
    v = np.exp(-((xx - 10 - dx) ** 2 + (yy - 10) ** 2) / 12) + np.exp(-((xx - 17 - dx) ** 2 + (yy - 15) ** 2) / 6)
    return (v / v.max() * 250).astype(np.uint8)


@pytest.fixture
def pair(tmp_path):
    (tmp_path / "f.png").write_bytes(png_bytes(blobs(0)))
    (tmp_path / "m.png").write_bytes(png_bytes(blobs(2)))
    return tmp_path / "f.png", tmp_path / "m.png"


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_choices_agree_with_the_library():
    assert set(cli_register.TRANSFORMS) == set(REGISTRATION_TRANSFORMS)
    assert set(cli_register.OPTIMIZERS) == set(OPTIMIZERS)
    assert set(cli_register.LOSSES) == set(SIMILARITIES)


def test_register_writes_its_outputs_and_one_line_per_level(pair, tmp_path, capsys):
    f, m = pair
    out = tmp_path / "out"
    code, stdout, err = run(
        [
            "register",
            str(f),
            str(m),
            "--out",
            str(out),
            "--loss",
            "mse",
            "--levels",
            "2",
            "--steps",
            "30",
            "--transform",
            "rigid",
        ],
        capsys,
    )
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["figure.png", "transform.json", "transform.tfm", "warped.png"]
    record = json.loads((out / "transform.json").read_text())
    assert abs(record["matrix"][0][2] - 2.0) < 0.2 and abs(record["matrix"][1][2]) < 0.2
    assert (
        (out / "transform.tfm")
        .read_text()
        .startswith("#Insight Transform File V1.0\n#Transform 0\nTransform: AffineTransform_double_2_2\n")
    )
    level_lines = [line for line in err.splitlines() if line.startswith("linear level")]
    assert len(level_lines) == 2 and "linear level 2/2 (28x24)" in level_lines[1]
    assert stdout.startswith(f"wrote {out}: warped.png, ")
    code, _, err = run(
        [
            "register",
            str(f),
            str(m),
            "--out",
            str(tmp_path / "q"),
            "--quiet",
            "--steps",
            "2",
            "--transform",
            "dense",
            "--levels",
            "1",
        ],
        capsys,
    )
    assert code == 0 and err == ""
    assert (tmp_path / "q" / "field.npy").is_file()
    assert json.loads((tmp_path / "q" / "transform.json").read_text())["settings"]["overlap_only"] is False
    code, _, err = run(
        ["register", str(f), str(m), "--out", str(tmp_path / "o"), "--quiet", "--overlap-only", "--steps", "2"],
        capsys,
    )
    assert code == 0, err
    assert json.loads((tmp_path / "o" / "transform.json").read_text())["settings"]["overlap_only"] is True


def test_errors_are_one_line(pair, tmp_path, capsys):
    f, m = pair
    np.save(tmp_path / "v.npy", np.zeros((4, 5, 6), np.float32))
    (tmp_path / "a.mha").write_bytes(b"x")
    cases = [
        ([str(tmp_path / "nope.png"), str(m)], "nope.png: No such file or directory"),
        ([str(tmp_path / "a.mha"), str(m)], "a.mha: unknown image type; expected one of .nii, .nii.gz, .npy, .png"),
        ([str(f), str(tmp_path / "v.npy")], "is 2-D (28x24 pixels) and MOVING"),
        ([str(f), str(m), "--steps", "-1"], "--steps must be >= 0, got -1"),
        ([str(f), str(m), "--steps", "10x5", "--levels", "3"], "--steps 10x5 gives 2 levels' steps but --levels is 3"),
        ([str(f), str(m), "--steps", "ten"], "--steps must be a number or one number per level joined by 'x'"),
        ([str(f), str(m), "--field-steps", "5x-1x2"], "--field-steps must be >= 0, got -1"),
    ]
    for i, (args, message) in enumerate(cases):
        code, _, err = run(["register", *args, "--out", str(tmp_path / f"o{i}")], capsys)
        assert code == 1 and err.count("\n") == 1 and message in err and "Traceback" not in err, err
        assert not (tmp_path / f"o{i}").exists()


def test_overwrite_replaces_only_its_own_files(pair, tmp_path, capsys):
    f, m = pair
    out = tmp_path / "out"
    argv = ["register", str(f), str(m), "--out", str(out), "--quiet", "--steps", "3", "--levels", "1"]
    assert run(argv, capsys)[0] == 0
    (out / "notes.txt").write_text("mine")
    code, _, err = run(argv, capsys)
    assert code == 1 and "already holds a registration" in err and "--overwrite" in err
    before = (out / "transform.json").stat().st_mtime_ns
    assert run([*argv, "--overwrite"], capsys)[0] == 0
    assert (out / "transform.json").stat().st_mtime_ns >= before
    assert (out / "notes.txt").read_text() == "mine"
    (out / "figure.png").unlink()
    (out / "figure.png").mkdir()
    code, _, err = run([*argv, "--overwrite"], capsys)
    assert code == 1 and "is not a regular file" in err
    (tmp_path / "file").write_text("x")
    code, _, err = run(["register", str(f), str(m), "--out", str(tmp_path / "file")], capsys)
    assert code == 1 and "is a file, not a directory" in err
