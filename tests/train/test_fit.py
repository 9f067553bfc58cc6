"""``stnkit.train.fit``: a user's own ``nn.Module`` trained on a user's own datasets, on tiny data."""

import csv
import json
import math

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

pytest.importorskip("lightning")

from stnkit.models import CNN  # noqa: E402
from stnkit.nn import STClassifier, with_transformer  # noqa: E402
from stnkit.train import TrainConfig, fit  # noqa: E402
from stnkit.train.checkpoint import read_lightning_checkpoint  # noqa: E402
from stnkit.train.module import STNModule  # noqa: E402

TINY = {"epochs": 1, "batch_size": 8}


def _data(n: int = 24, channels: int = 1, size: int = 16, classes: int = 3, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.rand(n, channels, size, size, generator=g), torch.randint(0, classes, (n,), generator=g))


def _mlp(seed: int = 0, size: int = 16, classes: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(size * size, 8), nn.ReLU(), nn.Linear(8, classes))


def _st_model(seed: int = 0) -> STClassifier:
    torch.manual_seed(seed)
    return with_transformer(CNN(1, 16, num_classes=3), in_channels=1, in_size=(16, 16))


def _metrics(out, version: int = 0) -> list[dict]:
    with open(out / "logs" / f"version_{version}" / "metrics.csv") as f:
        return list(csv.DictReader(f))


def _columns(rows: list[dict], name: str) -> list[float]:
    return [float(r[name]) for r in rows if r.get(name) not in (None, "")]


def _same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class TestOutputs:
    def test_fit_writes_the_run_directory_and_the_results(self, tmp_path):
        out = tmp_path / "run"
        model = _mlp()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        res = fit(model, _data(24), _data(16, seed=1), TINY, test_data=_data(12, seed=2), out=out, quiet=True)
        for name in ("results.json", "model.safetensors", "config.yaml", "checkpoints/last.ckpt"):
            assert (out / name).is_file(), name
        saved = json.loads((out / "results.json").read_text())
        for key in ("best_val_error", "test_error", "epochs", "global_step"):
            assert key in res and key in saved, key
        assert saved["epochs"] == res["epochs"] == 1
        assert saved["global_step"] == res["global_step"] == 3  # 24 samples, batch 8, one epoch
        assert 0.0 <= res["best_val_error"] <= 100.0 and 0.0 <= res["test_error"] <= 100.0
        assert res["test_size"] == 12 and res["train_size"] == 24 and res["val_size"] == 16
        # trained in place, left in eval mode
        assert not model.training
        assert not _same_state(before, model.state_dict())

    def test_its_files_hold_your_weights_for_your_code_to_load(self, tmp_path, capsys):
        from safetensors.torch import load_file

        from stnkit.cli import main

        out = tmp_path / "run"
        model = _mlp()
        fit(model, _data(24), _data(16, seed=1), TINY, out=out, quiet=True)
        # your code rebuilds the model and loads the weights
        again = _mlp(seed=5)
        again.load_state_dict(load_file(str(out / "model.safetensors")))
        assert _same_state(again.state_dict(), model.state_dict())
        # stnkit's commands cannot build a model of yours: one line that says how to load it
        for path in (out / "model.safetensors", out / "checkpoints" / "last.ckpt"):
            assert main(["eval", str(path)]) == 1
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and "a model of your own" in err[0] and "load_state_dict" in err[0], err
        assert "model and data options are not read" in (out / "config.yaml").read_text()

    def test_test_error_is_the_models_error_on_the_test_data(self, tmp_path):
        test = _data(20, seed=5)
        model = _mlp()
        res = fit(model, _data(24), _data(16, seed=1), TINY, test_data=test, out=tmp_path / "run", quiet=True)
        with torch.no_grad():
            wrong = (model(test.tensors[0]).argmax(1) != test.tensors[1]).float().mean()
        assert res["test_error"] == pytest.approx(100.0 * float(wrong), abs=1e-3)

    def test_config_yaml_holds_the_config_given(self, tmp_path):
        import yaml

        out = tmp_path / "run"
        fit(_mlp(), _data(16), None, {"epochs": 1, "batch_size": 8, "lr": 0.0123, "seed": 7}, out=out, quiet=True)
        saved = yaml.safe_load((out / "config.yaml").read_text())
        assert saved["lr"] == 0.0123 and saved["seed"] == 7 and saved["batch_size"] == 8

    def test_without_val_data_the_best_is_the_last(self, tmp_path):
        out = tmp_path / "run"
        model = _mlp()
        res = fit(model, _data(24), None, {"epochs": 2, "batch_size": 8}, out=out, quiet=True)
        assert res["best_val_error"] is None
        assert res["val_size"] == 0 and res["epochs"] == 2 and res["global_step"] == 6
        assert res["best_checkpoint"] == "checkpoints/last.ckpt"
        assert not list((out / "checkpoints").glob("best-*"))
        rows = _metrics(out)
        assert all(r.get("val_error", "") in ("", None) for r in rows)  # no validation ran
        last = read_lightning_checkpoint(out / "checkpoints" / "last.ckpt")["state_dict"]
        assert _same_state({k.removeprefix("model."): v for k, v in last.items()}, model.state_dict())


class _RecordingData(Dataset):
    """A dataset that records the epochs it is told (and those its samples are read in) and
    draws its noise from (seed, epoch)."""

    def __init__(self, n: int = 24):
        self.base = _data(n)
        self.told: list[int] = []
        self.read: set[int] = set()
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.told.append(epoch)
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i):
        self.read.add(self.epoch)
        x, y = self.base[i]
        g = torch.Generator().manual_seed(1000 * self.epoch + i)
        return x + 0.1 * torch.rand(x.shape, generator=g), y


# a constant learning rate: the 1-epoch run's schedule is then the 2-epoch run's first epoch
# (a cosine run extended on resume takes the new length: test_extending_a_cosine_run_equals_the_longer_run)
CFG = {"epochs": 2, "batch_size": 8, "deterministic": True, "seed": 3, "schedule": "none"}


def _last(run):
    return read_lightning_checkpoint(run / "checkpoints" / "last.ckpt")["state_dict"]


class TestResume:
    def test_resume_is_exact_and_the_dataset_is_told_each_epoch(self, tmp_path):
        whole = _RecordingData()
        full = _mlp(seed=3)
        res_full = fit(full, whole, _data(16, seed=1), CFG, out=tmp_path / "full", quiet=True)
        assert whole.told == [0, 1] and whole.read == {0, 1}

        first = _RecordingData()
        part = _mlp(seed=3)
        fit(part, first, _data(16, seed=1), {**CFG, "epochs": 1}, out=tmp_path / "part", quiet=True)
        assert first.told == [0] and first.read == {0}
        second = _RecordingData()
        resumed = _mlp(seed=3)  # a fresh model, built as before
        res_resumed = fit(resumed, second, _data(16, seed=1), CFG, out=tmp_path / "part", resume=True, quiet=True)
        # the resumed run reads its samples as epoch 1, and was last told 1 before reading them
        assert second.told[-1] == 1 and second.read == {1}
        assert res_resumed["epochs"] == res_full["epochs"] == 2
        assert res_resumed["global_step"] == res_full["global_step"] == 6
        assert _same_state(_last(tmp_path / "full"), _last(tmp_path / "part"))
        assert _same_state(full.state_dict(), resumed.state_dict())
        assert res_resumed["best_val_error"] == res_full["best_val_error"]

    def test_a_different_run_differs(self, tmp_path):
        # the exactness above is not vacuous: another seed ends elsewhere
        fit(_mlp(seed=3), _RecordingData(), None, CFG, out=tmp_path / "a", quiet=True)
        fit(_mlp(seed=3), _RecordingData(), None, {**CFG, "seed": 4}, out=tmp_path / "b", quiet=True)
        assert not _same_state(_last(tmp_path / "a"), _last(tmp_path / "b"))

    def test_extending_a_cosine_run_equals_the_longer_run(self, tmp_path):
        cfg = {**CFG, "schedule": "cosine"}
        fit(_mlp(seed=3), _RecordingData(), None, cfg, out=tmp_path / "full", quiet=True)
        fit(_mlp(seed=3), _RecordingData(), None, {**cfg, "epochs": 1}, out=tmp_path / "part", quiet=True)
        fit(_mlp(seed=3), _RecordingData(), None, cfg, out=tmp_path / "part", resume=True, quiet=True)
        assert _same_state(_last(tmp_path / "full"), _last(tmp_path / "part"))

    def test_a_resumed_run_tells_the_dataset_only_the_epochs_it_trains(self, tmp_path):
        fit(_mlp(seed=3), _RecordingData(), None, {**CFG, "epochs": 1}, out=tmp_path / "run", quiet=True)
        second = _RecordingData()
        fit(_mlp(seed=3), second, None, CFG, out=tmp_path / "run", resume=True, quiet=True)
        # Lightning may fetch the loader once before it restores its epoch counter: the fetch that
        # feeds the training is told the epoch it trains, and never an epoch twice in a row
        assert second.told[-1] == 1 and set(second.told) <= {0, 1}, second.told


class TestTransformer:
    def _st(self, seed=0) -> STClassifier:
        torch.manual_seed(seed)
        backbone = CNN(3, 32, num_classes=3)
        return with_transformer(backbone, in_channels=3, in_size=(32, 32))

    def test_optimizer_groups_follow_loc_lr_mult(self):
        model = self._st()
        opt = STNModule(model, TrainConfig(lr=0.01, loc_lr_mult=0.25, schedule="none")).configure_optimizers()
        loc = {id(p) for p in model.transformer.parameters()}
        seen = set()
        for group in opt.param_groups:
            ids = {id(p) for p in group["params"]}
            seen |= ids
            assert ids <= loc or not ids & loc  # a group is all transformer or all backbone
            assert group["lr"] == pytest.approx(0.0025 if ids <= loc else 0.01)
        assert seen == {id(p) for p in model.parameters()}

    def test_loc_lr_mult_zero_freezes_the_transformer_only(self, tmp_path):
        model = self._st()
        st0 = {k: v.clone() for k, v in model.transformer.named_parameters()}
        bb0 = {k: v.clone() for k, v in model.classifier.named_parameters()}
        cfg = {"epochs": 1, "batch_size": 8, "lr": 0.01, "loc_lr_mult": 0.0, "schedule": "none"}
        data = _data(16, channels=3, size=32)
        fit(model, data, None, cfg, out=tmp_path / "run", quiet=True)
        assert _same_state(st0, dict(model.transformer.named_parameters()))
        assert not _same_state(bb0, dict(model.classifier.named_parameters()))

    def test_loc_lr_mult_one_moves_the_transformer(self, tmp_path):
        model = self._st()
        st0 = {k: v.clone() for k, v in model.transformer.named_parameters()}
        cfg = {"epochs": 1, "batch_size": 8, "lr": 0.01, "loc_lr_mult": 1.0, "schedule": "none"}
        fit(model, _data(16, channels=3, size=32), None, cfg, out=tmp_path / "run", quiet=True)
        assert not _same_state(st0, dict(model.transformer.named_parameters()))


class TestLoggedMetrics:
    def test_coverage_weight_logs_train_coverage(self, tmp_path):
        cfg = {"epochs": 1, "batch_size": 8, "coverage_weight": 0.5}
        fit(_st_model(), _data(16), _data(8, seed=1), cfg, out=tmp_path / "on", quiet=True)
        values = _columns(_metrics(tmp_path / "on"), "train_coverage")
        assert values and all(math.isfinite(v) and v >= 0 for v in values)
        fit(_st_model(), _data(16), _data(8, seed=1), TINY, out=tmp_path / "off", quiet=True)
        assert not _columns(_metrics(tmp_path / "off"), "train_coverage")

    def test_diagnostics_columns_for_an_st_classifier(self, tmp_path):
        fit(_st_model(), _data(16), _data(8, seed=1), {"epochs": 2, "batch_size": 8}, out=tmp_path / "st", quiet=True)
        rows = _metrics(tmp_path / "st")
        for name in ("st_outside_fraction", "st_mean_scale", "st_identity_distance"):
            values = _columns(rows, name)
            assert len(values) == 2, name  # once per epoch
            assert all(math.isfinite(v) for v in values), name
        assert all(0.0 <= v <= 1.0 for v in _columns(rows, "st_outside_fraction"))
        # identity-initialised: the first epoch's warp is close to the identity
        assert _columns(rows, "st_mean_scale")[0] == pytest.approx(1.0, abs=0.5)

    def test_no_diagnostics_for_a_plain_model(self, tmp_path):
        fit(_mlp(), _data(16), _data(8, seed=1), TINY, out=tmp_path / "plain", quiet=True)
        rows = _metrics(tmp_path / "plain")
        assert _columns(rows, "val_error")
        assert not _columns(rows, "st_mean_scale")


class TestBadArguments:
    @pytest.mark.parametrize(
        "kwargs,error,pattern",
        [
            ({"model": lambda x: x}, TypeError, r"^model must be an nn.Module"),
            ({"model": "resnet18"}, TypeError, r"^model must be an nn.Module, got str"),
            ({"train_data": 42}, TypeError, r"^train_data must be a map-style dataset.*got int"),
            ({"val_data": object()}, TypeError, r"^val_data must be a map-style dataset"),
            ({"test_data": 3.5}, TypeError, r"^test_data must be a map-style dataset.*got float"),
            ({"train_data": TensorDataset(torch.zeros(0, 1, 16, 16), torch.zeros(0))}, ValueError, r"train_data"),
            ({"config": "adamw"}, TypeError, r"^config must be a TrainConfig.*got str"),
            ({"config": 1}, TypeError, r"^config must be a TrainConfig.*got int"),
            ({"config": {"epochs": 0}}, ValueError, r"epochs"),
            ({"config": {"optimizer": "adam"}}, ValueError, r"optimizer must be one of"),
        ],
        ids=[
            "lambda-model",
            "str-model",
            "int-train",
            "object-val",
            "float-test",
            "empty-train",
            "str-config",
            "int-config",
            "zero-epochs",
            "bad-optimizer",
        ],
    )
    def test_bad_arguments_raise_one_line(self, tmp_path, kwargs, error, pattern):
        out = tmp_path / "run"
        args = {"model": _mlp(), "train_data": _data(8), "val_data": None, "config": TINY, **kwargs}
        test = args.pop("test_data", None)
        with pytest.raises(error, match=pattern) as info:
            fit(**args, test_data=test, out=out, quiet=True)
        assert "\n" not in str(info.value)
        assert not out.exists()  # refused before anything is written

    def test_unknown_config_option_is_named(self, tmp_path):
        with pytest.raises(TypeError, match="nosuch"):
            fit(_mlp(), _data(8), None, {"nosuch": 1}, out=tmp_path / "run", quiet=True)


class TestExistingRun:
    def test_an_earlier_run_is_refused_without_resume_or_overwrite(self, tmp_path):
        out = tmp_path / "run"
        fit(_mlp(), _data(8), None, TINY, out=out, quiet=True)
        before = (out / "results.json").read_text()
        with pytest.raises(FileExistsError, match="already holds a run"):
            fit(_mlp(), _data(8), None, TINY, out=out, quiet=True)
        assert (out / "results.json").read_text() == before
        assert sorted(p.name for p in (out / "logs").iterdir()) == ["version_0"]

    def test_overwrite_removes_only_stnkits_outputs(self, tmp_path):
        out = tmp_path / "run"
        fit(_mlp(), _data(8), None, {**TINY, "lr": 0.01}, out=out, quiet=True)
        (out / "notes.txt").write_text("my notes\n")
        (out / "mine").mkdir()
        (out / "mine" / "data.bin").write_bytes(b"\x00\x01")
        res = fit(_mlp(), _data(8), None, {**TINY, "lr": 0.002}, out=out, quiet=True, overwrite=True)
        assert (out / "notes.txt").read_text() == "my notes\n"
        assert (out / "mine" / "data.bin").read_bytes() == b"\x00\x01"
        # the earlier run's outputs are gone: a fresh version_0, the new config
        assert sorted(p.name for p in (out / "logs").iterdir()) == ["version_0"]
        assert "lr: 0.002" in (out / "logs" / "version_0" / "hparams.yaml").read_text()
        # a file of yours inside stnkit's folders is never deleted: the overwrite is refused
        (out / "logs" / "version_0" / "marker").write_text("mine too")
        with pytest.raises(FileExistsError, match=r"marker is not one of them"):
            fit(_mlp(), _data(8), None, TINY, out=out, quiet=True, overwrite=True)
        assert (out / "logs" / "version_0" / "marker").read_text() == "mine too"
        assert json.loads((out / "results.json").read_text())["config"]["lr"] == 0.002 == res["config"]["lr"]
