"""Checkpoints in the robust-library layout load safely; the feature model's outputs are the network's own."""

import pickle

import pytest
import torch

from salient_imagenet_builder.builder.demo import make_checkpoint
from salient_imagenet_builder.core.model import CheckpointError, create_feature_model, load_checkpoint


@pytest.fixture(scope="module")
def resnet50_checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "resnet50_l2_eps3.ckpt", "resnet50", seed=5)


def test_robust_layout_loads_into_resnet50(resnet50_checkpoint):
    model, info = create_feature_model("resnet50_l2_eps3", str(resnet50_checkpoint))
    state = torch.load(resnet50_checkpoint, weights_only=True)["model"]
    for name, tensor in model.net.state_dict().items():
        assert torch.equal(tensor, state["module.model." + name]), name
    assert info.arch == "resnet50" and len(info.sha256) == 64 and model.num_features == 2048


def test_outputs_are_layer4_its_pool_and_the_logits(resnet50_checkpoint):
    model, _ = create_feature_model("resnet50_l2_eps3", str(resnet50_checkpoint))
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        spatial, pooled, logits = model(x)
        net = model.net
        h = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(
            1, 3, 1, 1)
        h = net.maxpool(net.act1(net.bn1(net.conv1(h))))
        layer4 = net.layer4(net.layer3(net.layer2(net.layer1(h))))
    assert spatial.shape == (2, 2048, 7, 7)
    torch.testing.assert_close(spatial, layer4)
    torch.testing.assert_close(pooled, layer4.mean((2, 3)))
    torch.testing.assert_close(logits, pooled @ net.fc.weight.T + net.fc.bias)


@pytest.fixture(scope="module")
def resnet18_checkpoint(tmp_path_factory):
    """One random resnet18 checkpoint for the module, read only: tests that alter one save their copy."""
    return make_checkpoint(tmp_path_factory.mktemp("ckpt18") / "r18.ckpt", "resnet18")


def test_missing_and_unexpected_keys_are_named(resnet18_checkpoint, tmp_path):
    path = resnet18_checkpoint
    fit = r"does not fit the timm architecture 'resnet50' \(choose it with --arch\): 1\d\d missing key"
    with pytest.raises(CheckpointError, match=fit):
        create_feature_model("resnet50_l2_eps3", str(path))
    ckpt = torch.load(path, weights_only=True)
    ckpt["model"]["module.model.extra.weight"] = torch.zeros(1)
    torch.save(ckpt, tmp_path / "extra.ckpt")
    with pytest.raises(CheckpointError, match="1 unexpected key\\(s\\) \\['extra.weight'\\]"):
        create_feature_model("resnet18", str(tmp_path / "extra.ckpt"))


def test_wrong_normalizer_is_refused(resnet18_checkpoint, tmp_path):
    path = tmp_path / "r18.ckpt"
    ckpt = torch.load(resnet18_checkpoint, weights_only=True)
    ckpt["model"]["module.normalizer.new_mean"] = torch.tensor([0.5, 0.5, 0.5]).view(3, 1, 1)
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match="new_mean"):
        create_feature_model("resnet18", str(path))


class Exploit:
    """Pickles to a call of os.system: a loader that runs pickled code would create the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("zip_format", [True, False])  # 2020-era checkpoints may use the legacy format
def test_pickled_code_is_never_executed(resnet18_checkpoint, tmp_path, zip_format):
    path = tmp_path / "r18.ckpt"
    ckpt = torch.load(resnet18_checkpoint, weights_only=True)
    marker = tmp_path / "pwned"
    ckpt["schedule"] = Exploit(marker)  # like the dill-pickled objects of real robust-library checkpoints
    torch.save(ckpt, path, pickle_module=pickle, _use_new_zipfile_serialization=zip_format)
    loaded = load_checkpoint(path)
    assert not marker.exists()
    assert torch.equal(loaded["model"]["module.model.fc.weight"], ckpt["model"]["module.model.fc.weight"])
    model, _ = create_feature_model("resnet18", str(path))
    assert not marker.exists()


def test_unknown_model_and_missing_checkpoint(resnet18_checkpoint, tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        create_feature_model("resnet18", str(tmp_path / "nope.ckpt"))
    with pytest.raises(CheckpointError, match="no_such_net"):
        create_feature_model("no_such_net", str(resnet18_checkpoint))


def test_normalizer_is_checked_without_a_wrapper(tmp_path):
    path = make_checkpoint(tmp_path / "r18.ckpt", "resnet18")
    state = torch.load(path, weights_only=True)["model"]  # the bare state dict, as many re-saved checkpoints are
    torch.save(state, tmp_path / "bare.ckpt")
    create_feature_model("resnet18", str(tmp_path / "bare.ckpt"))  # the right normaliser loads
    state["module.normalizer.new_std"] = torch.tensor([1.0, 1.0, 1.0]).view(3, 1, 1)
    torch.save(state, tmp_path / "bare.ckpt")
    with pytest.raises(CheckpointError, match=r"bare.ckpt: module.normalizer.new_std = \[1.0, 1.0, 1.0\], expected"):
        create_feature_model("resnet18", str(tmp_path / "bare.ckpt"))


def _bad_checkpoints(tmp_path):
    """(file, what the one line must say) for each kind of unusable file."""
    import timm

    good = make_checkpoint(tmp_path / "good.ckpt", "resnet18")
    data = good.read_bytes()
    (tmp_path / "empty.ckpt").write_bytes(b"")
    yield tmp_path / "empty.ckpt", "empty file (0 bytes)"
    (tmp_path / "cut.ckpt").write_bytes(data[: len(data) // 2])
    yield tmp_path / "cut.ckpt", "truncated or damaged checkpoint"
    legacy = tmp_path / "legacy.ckpt"
    torch.save(torch.load(good, weights_only=True), legacy, _use_new_zipfile_serialization=False)
    legacy.write_bytes(legacy.read_bytes()[:5000])
    yield legacy, "truncated or damaged checkpoint (legacy torch format"
    (tmp_path / "notes.ckpt").write_text("these are my notes, not weights\n")
    yield tmp_path / "notes.ckpt", "not a torch checkpoint (starts with b'these ar')"
    import zipfile

    with zipfile.ZipFile(tmp_path / "photos.zip", "w") as archive:
        archive.writestr("a.txt", "hello")
    yield tmp_path / "photos.zip", "a zip archive but not a torch checkpoint (no data.pkl inside)"
    torch.save(timm.create_model("resnet10t", pretrained=False), tmp_path / "whole.pt")
    yield tmp_path / "whole.pt", "holds a whole pickled object (timm.models.resnet.ResNet), not a state dict"
    torch.save({"model": torch.nn.Linear(2, 2), "epoch": 1}, tmp_path / "wrapped.pt")
    yield tmp_path / "wrapped.pt", "holds a whole pickled object (torch.nn.modules.linear.Linear), not a state dict"
    ckpt = torch.load(good, weights_only=True)
    ckpt["model"]["module.model.conv1.weight"] = [[0.5, 0.25]]
    ckpt["model"]["module.model.fc.bias"] = "zeros"
    torch.save(ckpt, tmp_path / "lists.ckpt")
    yield tmp_path / "lists.ckpt", "2 weight(s) are not tensors, e.g. 'conv1.weight' is a list"
    torch.save({"epoch": 3, "note": "nothing else"}, tmp_path / "meta.ckpt")
    yield tmp_path / "meta.ckpt", "no state dict found"
    (tmp_path / "weights").mkdir()
    yield tmp_path / "weights", "a folder, not a checkpoint file"


def test_unusable_checkpoints_get_one_line_naming_the_file(tmp_path):
    for path, message in _bad_checkpoints(tmp_path):
        with pytest.raises(CheckpointError) as caught:
            create_feature_model("resnet18", str(path))
        text = str(caught.value)
        assert text.startswith(f"{path}: ") and message in text and "\n" not in text, (path.name, text)


def test_unusable_checkpoint_through_the_cli_is_one_line(tmp_path, inputs, caplog):
    from salient_imagenet_builder.cli import build_main

    path = tmp_path / "whole.pt"
    torch.save(torch.nn.Linear(2, 2), path)
    code = build_main(["--source", str(inputs["folder"]), "--out", str(tmp_path / "out"), "--model", "resnet18",
                       "--model-checkpoint", str(path), "--annotations", str(inputs["annotations"])])
    lines = [r.getMessage() for r in caplog.records]
    assert code == 2, lines  # and no exception escaped: no traceback
    assert any(f"{path}: holds a whole pickled object (torch.nn.modules.linear.Linear)" in line for line in lines)
    assert not (tmp_path / "out").exists()
