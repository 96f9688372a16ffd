"""Compiled forwards (``compile=``, ``fastsmooth.engine.compiled``).

The tests that compile are marked ``compile`` (torch.compile takes 30-80 s per graph on a small
CPU): ``pytest -m "not compile"`` deselects them; CI runs them. They check that

- on the demo digits, with a quickly trained column network, compiled counts equal eager counts
  on every image whose ablations have no near-tie (top-two logit gap below 1e-4), and that the
  graph is compiled once per shape for the whole run (the last, shorter forward padded) and
  then reused;
- the ViT token path (``forward_tokens``) counts the same compiled as eager;
- on CUDA (``make gpu-check``), the CUDA-graphs mode counts the same as eager.
"""
from __future__ import annotations

import pytest
import torch

import fastsmooth
from fastsmooth.data import demo_mnist
from fastsmooth.engine import compiled
from fastsmooth.engine.compiled import check_compile, compile_records, pad_rows, resolve_mode
from fastsmooth.results import smoother_fingerprint

NEAR_TIE = 1e-4


def test_check_compile_accepts_the_options_and_names_the_fix():
    for ok in (False, True, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"):
        assert check_compile(ok) == ok
    for bad in ("fast", 1, None):
        with pytest.raises(ValueError, match="compile must be False, True or one of 'default'"):
            check_compile(bad)
    with pytest.raises(ValueError, match="compile must be"):
        fastsmooth.ColumnSmoothing(torch.nn.Flatten(), 3, 2, compile="fast")


def test_modes_use_cuda_graphs_only_on_cuda():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_mode(False, cpu) is None and resolve_mode(False, cuda) is None
    assert resolve_mode(True, cpu) == "default" and resolve_mode(True, cuda) == "reduce-overhead"
    assert resolve_mode("reduce-overhead", cpu) == "default"
    assert resolve_mode("max-autotune", cpu) == "max-autotune-no-cudagraphs"
    assert resolve_mode("max-autotune", cuda) == "max-autotune"


def test_padding_repeats_the_first_row_in_the_requested_layout():
    t = torch.rand(3, 2, 4, 5)
    padded = pad_rows(t, 7, torch.channels_last)
    assert padded.shape == (7, 2, 4, 5) and padded.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(padded[:3], t) and torch.equal(padded[3:], t[:1].expand(4, -1, -1, -1))
    assert pad_rows(t, 3) is t and pad_rows(t, 2) is t  # full (or fuller) batches are untouched
    index = torch.tensor([[0, 2], [1, 3]])
    assert pad_rows(index, 4).tolist() == [[0, 2], [1, 3], [0, 2], [0, 2]]


def test_fingerprint_records_compile_only_when_on():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2 * 6 * 6, 3))
    eager = fastsmooth.ColumnSmoothing(model, 3, 2)
    assert "compile" not in smoother_fingerprint(eager)["hyperparameters"]  # eager files keep their fingerprints
    eager.compile = "max-autotune"
    assert smoother_fingerprint(eager)["hyperparameters"]["compile"] == "max-autotune"


def test_evaluate_sets_compile_for_the_run_and_restores_it(tmp_path):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2 * 6 * 6, 3))
    smoother = fastsmooth.ColumnSmoothing(model, 3, 2, batch_size=8, compile=True)
    data = [(torch.rand(1, 6, 6), 0) for _ in range(3)]
    before = len(compile_records())
    summary = fastsmooth.evaluate(smoother, data, [1], output=tmp_path / "r.tsv", progress=False, compile=False)
    assert summary.compile_seconds is None and len(compile_records()) == before  # ran eagerly
    assert smoother.compile is True
    assert '"compile"' not in (tmp_path / "r.tsv").read_text().splitlines()[0]
    with pytest.raises(TypeError, match="compile=True needs a smoother with a compile option"):
        fastsmooth.evaluate(_NoCompile(), data, [1], progress=False, compile=True)


class _NoCompile:
    certificate_name = "patch_size"

    def evaluate_batch(self, x):  # pragma: no cover - refused before any call
        raise AssertionError


def _trained_column_network() -> tuple[torch.nn.Module, torch.Tensor]:
    """The demo's MNIST CNN trained briefly (1 epoch, 2000 digits) under column ablation s = 2,
    and 60 held-out digits."""
    from fastsmooth import methods
    from fastsmooth.models import build
    from fastsmooth.training import TrainConfig, train

    train_set, test_set = demo_mnist(1000, 0)
    subset = torch.utils.data.Subset(train_set, range(2000))
    method = methods.get("column")
    hp = methods.resolve(method, {"size": 2, "threshold": 0.3}, (1, 28, 28))
    torch.manual_seed(0)
    model = build("mnist_cnn", in_channels=2, num_classes=10)
    train(model, subset, method.noise(hp, "image"), TrainConfig(epochs=1, lr=2e-3, copies=2, optimizer="adam"),
          progress=False)
    return model.eval(), test_set.tensors[0][:60]


def near_ties(model: torch.nn.Module, x: torch.Tensor, size: int) -> torch.Tensor:
    """bool [B]: images with a column ablation whose top two eager logits lie within 1e-4."""
    with torch.inference_mode():
        logits = torch.cat([model(chunk) for chunk in fastsmooth.ops.ablate_bands(x, size).split(256)])
    top2 = logits.topk(2, dim=1).values
    return ((top2[:, 0] - top2[:, 1]) < NEAR_TIE).reshape(len(x), -1).any(dim=1).cpu()


@pytest.mark.compile
def test_compiled_counts_equal_eager_except_near_ties_on_the_demo_digits(capsys):
    model, x = _trained_column_network()
    # 60 digits x 28 bands = 1680 rows in forwards of 256: the last holds 144 rows, padded to 256
    eager = fastsmooth.ColumnSmoothing(model, 10, 2, threshold=None, batch_size=256)
    fast = fastsmooth.ColumnSmoothing(model, 10, 2, threshold=None, batch_size=256, compile=True)
    before = len(compile_records())
    want, got = eager.counts(x), fast.counts(x)
    records = compile_records()[before:]
    assert [r.shapes for r in records] == [((256, 2, 28, 28),)]  # one graph served the whole run
    assert torch.equal(fast.counts(x[:7]), eager.counts(x[:7]))  # 196 rows: padded, no new graph
    assert len(compile_records()) == before + 1
    near = near_ties(model, x, 2)
    differ = (want != got).any(dim=1)
    assert not (differ & ~near).any(), "compiled counts differ from eager on an image without a near-tie"
    assert int(want.sum()) == int(got.sum()) == 60 * 28
    with capsys.disabled():
        print(f"\ncompiled vs eager on {len(x)} demo digits: {int(differ.sum())} images differ, "
              f"{int(near.sum())} have a near-tie ablation; compiled in {records[0].seconds:.1f} s")


@pytest.mark.compile
def test_compiled_vit_token_path_counts_equal_eager():
    from conftest import timm_or_skip

    timm_or_skip()
    from fastsmooth.models.vit import mnist_vit

    torch.manual_seed(1)
    # every token kept (one token count: one graph); depth 1 keeps the compile short
    vit = mnist_vit(drop_tokens=False, depth=1).eval()
    x = torch.rand(5, 1, 28, 28)
    eager = fastsmooth.ViTColumnSmoothing(vit, 10, 4, batch_size=64)
    fast = fastsmooth.ViTColumnSmoothing(vit, 10, 4, batch_size=64, compile=True)
    before = len(compile_records())
    assert torch.equal(fast.counts(x), eager.counts(x))  # 140 rows: forwards of 64, 64 and 12 (padded)
    records = compile_records()[before:]
    assert [(r.entry, r.shapes[1]) for r in records] == [("forward_tokens", (64, 49))]


@pytest.mark.compile
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_cuda_graphs_count_as_eager():
    torch.manual_seed(2)
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(8 * 26 * 26, 10)).cuda().eval()
    x = torch.rand(9, 1, 28, 28, device="cuda")
    eager = fastsmooth.ColumnSmoothing(model, 10, 2, threshold=None, batch_size=100)
    graphs = fastsmooth.ColumnSmoothing(model, 10, 2, threshold=None, batch_size=100, compile=True)
    assert compiled.resolve_mode(graphs.compile, x.device) == "reduce-overhead"
    first, second = graphs.counts(x), graphs.counts(x)  # the second call replays the graphs
    assert torch.equal(first, second)
    differ = (first != eager.counts(x)).any(dim=1).cpu()
    assert not (differ & ~near_ties(model, x, 2)).any()


def test_cli_compile_flag_takes_no_value_or_a_mode():
    import argparse

    from fastsmooth.cli import certify as certify_command

    parser = argparse.ArgumentParser()
    certify_command.add_parser(parser.add_subparsers())
    base = ["certify", "-c", "m.pt", "--data", "demo"]
    assert parser.parse_args(base).compile is False
    assert parser.parse_args(base + ["--compile"]).compile is True
    assert parser.parse_args(base + ["--compile", "max-autotune"]).compile == "max-autotune"
    with pytest.raises(SystemExit):
        parser.parse_args(base + ["--compile", "fast"])


@pytest.mark.compile
def test_evaluate_with_compile_reports_compile_time_and_records_it(tmp_path):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2 * 6 * 6, 3))
    smoother = fastsmooth.ColumnSmoothing(model, 3, 2, batch_size=8)
    data = [(torch.rand(1, 6, 6), 0) for _ in range(3)]
    eager = fastsmooth.evaluate(smoother, data, [1], progress=False)
    fast = fastsmooth.evaluate(smoother, data, [1], output=tmp_path / "r.tsv", progress=False, compile=True)
    assert fast.compile_seconds is not None and fast.compile_seconds > 0 and smoother.compile is False
    assert '"compile":true' in (tmp_path / "r.tsv").read_text().splitlines()[0]
    assert [(r.prediction, r.certificate) for r in fast.rows] == [(r.prediction, r.certificate) for r in eager.rows]


def _smoother_classes() -> list[type]:
    from fastsmooth.smoothing.base import BaseSmoother

    public = [getattr(fastsmooth, name) for name in dir(fastsmooth) if not name.startswith("_")]
    return [c for c in public if isinstance(c, type) and issubclass(c, BaseSmoother) and c is not BaseSmoother]


@pytest.mark.parametrize("cls", _smoother_classes(), ids=lambda c: c.__name__)
def test_every_smoother_takes_compile(cls):
    import inspect

    params = inspect.signature(cls).parameters
    if "compile" not in params:  # the ViT constructors pass their keywords on to the patch smoother's
        assert any(p.kind is p.VAR_KEYWORD for p in params.values()), f"{cls.__name__} has no compile= option"
        base = cls.__bases__[1]
        assert "compile" in inspect.signature(base).parameters, f"{cls.__name__} has no compile= option"


def test_the_smoother_list_holds_the_method_families():
    names = {c.__name__ for c in _smoother_classes()}
    assert {"ColumnSmoothing", "BlockSmoothing", "PatchCleanser", "Smooth", "DSSN", "ViTColumnSmoothing"} <= names


@pytest.mark.compile
def test_compiled_patchcleanser_answers_equal_eager():
    torch.manual_seed(2)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16 * 16, 3)).eval()
    x = torch.rand(6, 1, 16, 16)
    eager = fastsmooth.PatchCleanser(model, 3, patch_size=3, num_mask=3, batch_size=32)
    fast = fastsmooth.PatchCleanser(model, 3, patch_size=3, num_mask=3, batch_size=32, compile=True)
    assert torch.equal(fast.predict(x), eager.predict(x))
    labels = eager.predict(x)
    assert torch.equal(fast.certify(x, labels), eager.certify(x, labels))
    assert torch.equal(fast.last_units, eager.last_units)
