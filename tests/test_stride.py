"""Strided column / row / block smoothing (Salman et al. 2022): the certificate against brute
force over every patch position (sound and tight), the smoothers against a loop over the
retained positions, exact early exit with the fewer ablations, stride 1 unchanged, the ViT
smoothers, and the errors."""
from __future__ import annotations

import math
import re

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fastsmooth import methods, ops
from fastsmooth.certificates import (
    band_delta,
    band_starts,
    bands_touched,
    block_delta,
    certify_counts,
    largest_certified_patch,
    patch_deltas,
    strided_band_delta,
    strided_block_delta,
)
from fastsmooth.ops.ablation.masks import cached_masks
from fastsmooth.smoothing import BlockSmoothing, ColumnSmoothing, RowSmoothing
from test_patch_smoothing import Trigger, tiny_net


# -- the certificate, by brute force --------------------------------------------------------------


def touched_by_brute_force(keep: torch.Tensor, m: int) -> int:
    """The most ablations (retained pixels ``keep`` [P, H, W]) any m x m patch of the image meets,
    every patch position enumerated."""
    _, H, W = keep.shape
    return max(
        int(keep[:, i : i + m, j : j + m].flatten(1).any(dim=1).sum())
        for i in range(H - m + 1)
        for j in range(W - m + 1)
    )


def largest_by_brute_force(row: list[int], deltas: list[int]) -> int:
    """semantics.md §1's rule, written out: the largest m whose Delta the gap clears."""
    order = sorted(range(len(row)), key=lambda k: -row[k])
    c, r = order[0], order[1]
    gap = row[c] - row[r]
    return max([m for m, d in enumerate(deltas, 1) if gap > 2 * d or (gap == 2 * d and c < r)], default=0)


@settings(max_examples=40, deadline=None)
@given(
    H=st.integers(3, 11),
    W=st.integers(3, 11),
    data=st.data(),
)
@example(H=7, W=10, data=None)  # s = 4 does not divide 10: a window across the wrap holds one band more
def test_band_certificate_is_the_brute_force_maximum(H, W, data):
    if data is None:
        axis, size, stride = "column", 4, 4
    else:
        axis = data.draw(st.sampled_from(["column", "row"]))
        length = W if axis == "column" else H
        size = data.draw(st.integers(1, length))
        stride = data.draw(st.integers(1, length))
    length = W if axis == "column" else H
    keep = cached_masks("band", H, W, size, 0, axis, torch.device("cpu"), stride).pixel_keep()[0]
    assert keep.shape[0] == math.ceil(length / stride)
    deltas = [int(strided_band_delta(m, size, stride, length)) for m in range(1, min(H, W) + 1)]
    brute = [touched_by_brute_force(keep, m) for m in range(1, min(H, W) + 1)]
    if stride == 1:  # today's Delta, m + s - 1: sound, and the brute force once it is below W
        assert all(d >= b and (d == b or m + size - 1 > length) for m, (d, b) in enumerate(zip(deltas, brute), 1))
    else:  # sound and tight: exactly the largest number of retained bands a patch meets
        assert deltas == brute
    vector = strided_band_delta(torch.arange(1, min(H, W) + 1), size, stride, length)
    assert vector.tolist() == deltas  # the vectorized form gives the same
    # the largest certified m equals the brute force's on random counts near the margins
    gen = torch.Generator().manual_seed(H * 100 + W)
    P = keep.shape[0]
    counts = torch.randint(0, P + 1, (64, 3), generator=gen)
    _, largest = largest_certified_patch(counts, patch_deltas(lambda m: strided_band_delta(m, size, stride, length),
                                                              min(H, W)))
    assert largest.tolist() == [largest_by_brute_force(row, brute)
                                for row in counts.tolist()]


@settings(max_examples=25, deadline=None)
@given(H=st.integers(3, 9), W=st.integers(3, 9), data=st.data())
def test_block_certificate_is_the_brute_force_maximum(H, W, data):
    size = data.draw(st.integers(1, min(H, W)))
    stride = (data.draw(st.integers(1, H)), data.draw(st.integers(1, W)))
    keep = cached_masks("block", H, W, size, 0, "column", torch.device("cpu"), stride).pixel_keep()[0]
    assert keep.shape[0] == math.ceil(H / stride[0]) * math.ceil(W / stride[1])
    for m in range(1, min(H, W) + 1):
        brute = touched_by_brute_force(keep, m)
        delta = int(strided_block_delta(m, size, stride, H, W))
        if stride == (1, 1):
            assert delta == block_delta(m, size) and delta >= brute
        else:
            assert delta == brute


def test_paper_count_when_the_stride_divides_the_length_and_one_band_more_across_the_wrap():
    # s | W: min(ceil((m + b - 1) / s), W / s), the paper's count
    for W, b, s in [(30, 4, 5), (220, 19, 10), (28, 7, 7), (12, 1, 3)]:
        m = torch.arange(1, W + 1)
        expected = torch.minimum(-(-(m + b - 1) // s), torch.tensor(W // s))
        assert torch.equal(bands_touched(m, b, s, W), expected)
    # W = 28, s = 5: bands start at 0, 5, .., 25; band 25 (columns 25, 26, 27, 0) and band 0 both
    # cover column 0, where ceil((1 + 4 - 1) / 5) = 1 would count one
    assert bands_touched(1, 4, 5, 28) == 2 and math.ceil((1 + 4 - 1) / 5) == 1
    assert band_starts(28, 5).tolist() == [0, 5, 10, 15, 20, 25]


def test_stride_one_is_todays_certificate_and_masks():
    m = torch.arange(1, 29)
    assert torch.equal(strided_band_delta(m, 5, 1, 28), band_delta(m, 5))
    assert torch.equal(strided_block_delta(m, 5, (1, 1), 28, 28), block_delta(m, 5))
    for kind in ("band", "block"):
        a = cached_masks(kind, 9, 11, 3, 0, "column", torch.device("cpu"))
        b = ops.ablation.masks.block_masks(9, 11, 3, torch.arange(99)) if kind == "block" else \
            ops.ablation.masks.band_masks(9, 11, 3, torch.arange(11), "column")
        assert torch.equal(a.rows, b.rows) and torch.equal(a.cols, b.cols)


# -- the smoothers -------------------------------------------------------------------------------


def loop_counts(model, x, masks, threshold, num_classes):
    """Votes over the given ablations, one forward per ablation with the reference op."""
    out = torch.zeros(x.shape[0], num_classes, dtype=torch.int64)
    for p in range(masks.count):
        batch = ops.ablate_with_masks(x, masks.select(slice(p, p + 1)), backend="reference")
        with torch.no_grad():
            logits = model(batch)
        out += (logits.softmax(1) >= threshold).long() if threshold else \
            torch.nn.functional.one_hot(logits.argmax(1), num_classes)
    return out


@pytest.mark.parametrize("kind,stride", [("column", 3), ("column", 4), ("row", 5), ("block", 2), ("block", (3, 2))])
def test_strided_counts_are_the_retained_ablations_votes(kind, stride):
    H, W = 9, 10
    model = tiny_net(1, 4, seed=3, scale=3.0)
    x = torch.rand(3, 1, H, W, generator=torch.Generator().manual_seed(1))
    cls = {"column": ColumnSmoothing, "row": RowSmoothing, "block": BlockSmoothing}[kind]
    smoother = cls(model, 4, 3, threshold=0.2, batch_size=7, stride=stride)
    if kind == "block":
        pair = stride if isinstance(stride, tuple) else (stride, stride)
        corners = [i * W + j for i in range(0, H, pair[0]) for j in range(0, W, pair[1])]
        masks = ops.ablation.masks.block_masks(H, W, 3, torch.tensor(corners))
    else:
        length = W if kind == "column" else H
        masks = ops.ablation.masks.band_masks(H, W, 3, torch.arange(0, length, stride), kind)
    assert smoother.masks(H, W, torch.device("cpu")).count == masks.count  # only the retained ones are built
    assert torch.equal(smoother.counts(x), loop_counts(model, x, masks, 0.2, 4))
    assert int(smoother.counts(x).sum(1).max()) <= masks.count * 4


@pytest.mark.parametrize("stride", [2, 3, 7])
def test_early_exit_with_the_fewer_ablations_equals_the_full_count(stride):
    H, W = 8, 14
    model = tiny_net(1, 3, seed=11, scale=4.0, bias=1.0)
    x = torch.rand(6, 1, H, W, generator=torch.Generator().manual_seed(stride))
    smoother = ColumnSmoothing(model, 3, 2, batch_size=3, stride=stride)
    full = smoother.evaluate_batch(x)
    P = math.ceil(W / stride)
    levels = [1, 2, 3, 5]
    decided = smoother.decide_batch(x, levels)
    assert torch.equal(decided.prediction, full.prediction)
    assert torch.equal(decided.certified, full.certificate[:, None] >= torch.tensor(levels, dtype=torch.float64))
    assert int(decided.forwards.max()) <= P
    prediction, certified = smoother.certify(x, 2)
    assert torch.equal(prediction, full.prediction) and torch.equal(certified, full.certificate >= 2)
    assert torch.equal(smoother.predict(x), full.prediction)


@settings(max_examples=8, deadline=None)
@given(kind=st.sampled_from(["column", "block"]), stride=st.integers(2, 5), seed=st.integers(0, 1000),
       trigger=st.sampled_from([(0, 1), (1, 0)]))
def test_no_patch_breaks_a_strided_certificate(kind, stride, seed, trigger):
    """A patch of ones flips exactly the retained ablations it meets (Trigger): no m x m patch
    moves a count by more than Delta, the bound is reached, and certified predictions hold."""
    H, W = 6, 9
    model = Trigger(1, 3, *trigger)
    cls = ColumnSmoothing if kind == "column" else BlockSmoothing
    smoother = cls(model, 3, 2, batch_size=500, stride=stride)
    x = torch.rand(1, 1, H, W, generator=torch.Generator().manual_seed(seed)) * 0.9
    base = smoother.counts(x)
    result = smoother.evaluate_batch(x)
    for m in range(1, min(H, W) + 1):
        patched = []
        for i in range(H - m + 1):
            for j in range(W - m + 1):
                y = x.clone()
                y[0, :, i : i + m, j : j + m] = 1.0
                patched.append(y)
        counts = smoother.counts(torch.cat(patched))
        moved = int((counts - base).abs().max())
        assert moved == smoother.delta(m, H, W)  # sound, and attained
        if m <= int(result.certificate[0]):
            assert (certify_counts(counts, 0)[0] == result.prediction[0]).all()


def test_transposed_rows_use_the_stride_along_the_transposed_width():
    model = tiny_net(1, 3, seed=2)
    x = torch.rand(2, 1, 7, 12, generator=torch.Generator().manual_seed(0))
    row = RowSmoothing(model, 3, 2, transposed=True, stride=3)
    column = ColumnSmoothing(model, 3, 2, stride=3)
    assert torch.equal(row.counts(x), column.counts(x.transpose(2, 3)))
    assert row.masks(12, 7, torch.device("cpu")).count == 3  # ceil(7 / 3) bands of the transposed image


# -- errors ------------------------------------------------------------------------------------


def test_bad_strides_are_refused_in_one_line():
    model = tiny_net(1, 3, seed=0)
    x = torch.rand(1, 1, 6, 8)
    with pytest.raises(ValueError, match=r"^stride must be a positive integer, got 0$"):
        ColumnSmoothing(model, 3, 2, stride=0)
    with pytest.raises(TypeError, match=r"stride must be an integer, got 2.5"):
        ColumnSmoothing(model, 3, 2, stride=2.5)
    with pytest.raises(ValueError, match=r"stride=9 is larger than the 8 columns of a 6 x 8 image; use a stride in \[1, 8\]"):
        ColumnSmoothing(model, 3, 2, stride=9).counts(x)
    with pytest.raises(ValueError, match=r"stride=7 is larger than the 6 rows"):
        RowSmoothing(model, 3, 2, stride=7).counts(x)
    with pytest.raises(ValueError, match=r"stride=\(7, 2\) is larger than the 6 rows of a 6 x 8 image"):
        BlockSmoothing(model, 3, 2, stride=(7, 2)).counts(x)
    with pytest.raises(ValueError, match=r"stride must be an integer or a pair \(rows, columns\), got \(1, 2, 3\)"):
        BlockSmoothing(model, 3, 2, stride=(1, 2, 3))
    for name in ("multi-band", "randomized-band", "ablation", "gaussian"):
        with pytest.raises(ValueError, match=rf"^stride=2 has no meaning for method {name!r} \(only column, row and block .*; drop --stride"):
            methods.resolve(methods.get(name), {"stride": 2, "size": 2, "keep": 1, "sigma": 0.5})
    with pytest.raises(ValueError, match=r"stride=9 cannot be used on 6 x 8 images \(column bands\): it must be in \[1, 8\]"):
        methods.resolve(methods.get("column"), {"size": 2, "stride": 9}, (1, 6, 8))
    with pytest.raises(ValueError, match=r"stride=\[2, 9\] cannot be used on 6 x 8 images \(blocks\)"):
        methods.resolve(methods.get("block"), {"size": 2, "stride": [2, 9]}, (1, 6, 8))


def test_methods_build_strided_smoothers_and_record_the_stride():
    from fastsmooth.evaluate import run_fingerprint

    model = tiny_net(1, 3, seed=0)
    for name, stride, expected in [("column", 4, 4), ("row", 2, 2), ("block", [2, 3], (2, 3)), ("block", 3, 3)]:
        method = methods.get(name)
        hp = methods.resolve(method, {"size": 2, "stride": stride}, (1, 6, 8))
        smoother = method.build(model, 3, hp, 16)
        assert smoother.stride == expected
        recorded = run_fingerprint(smoother)["hyperparameters"]["stride"]
        assert recorded == (list(expected) if isinstance(expected, tuple) else expected)
    default = methods.resolve(methods.get("column"), {"size": 2})
    assert default["stride"] == 1 and methods.get("column").build(model, 3, default, 16).stride == 1


# -- smoothed ViTs: token dropping over the retained ablations -----------------------------------


@pytest.mark.parametrize("kind,stride,drop", [("column", 3, True), ("column", 5, False), ("row", 6, True),
                                               ("block", (3, 5), True)])
def test_vit_strided_counts_equal_loop_and_early_exit(kind, stride, drop):
    import fastsmooth
    from test_vit import loop_counts as vit_loop_counts
    from test_vit import small_vit

    H = W = 16
    model = small_vit(drop_tokens=drop)
    x = torch.rand(2, 3, H, W, generator=torch.Generator().manual_seed(4))
    cls = {"column": fastsmooth.ViTColumnSmoothing, "row": fastsmooth.ViTRowSmoothing,
           "block": fastsmooth.ViTBlockSmoothing}[kind]
    smoother = cls(model, 10, 3, batch_size=5, stride=stride)
    masks = cached_masks("block" if kind == "block" else "band", H, W, 3, 0, kind if kind != "block" else "column",
                         torch.device("cpu"), stride)
    P = masks.count
    assert sum(g.count for g in smoother.groups(H, W, torch.device("cpu"))) == P  # retained ablations only
    counts = smoother.counts(x)
    assert torch.equal(counts, vit_loop_counts(model, x, masks, drop))
    full = smoother.evaluate_batch(x)
    decided = smoother.decide_batch(x, [1, 2])
    assert torch.equal(decided.prediction, full.prediction) and int(decided.forwards.max()) <= P
    assert torch.equal(decided.certified, full.certificate[:, None] >= torch.tensor([1.0, 2.0], dtype=torch.float64))


def test_ops_write_only_the_retained_ablations():
    x = torch.rand(2, 1, 7, 10, generator=torch.Generator().manual_seed(0))
    every = ops.ablate_bands(x, 3).view(2, 10, 2, 7, 10)
    strided = ops.ablate_bands(x, 3, stride=4).view(2, 3, 2, 7, 10)
    assert torch.equal(strided, every[:, [0, 4, 8]])
    blocks = ops.ablate_blocks(x, 2).view(2, 7, 10, 2, 7, 10)
    assert torch.equal(ops.ablate_blocks(x, 2, stride=(3, 4)).view(2, 3, 3, 2, 7, 10), blocks[:, ::3, ::4])
    with pytest.raises(ValueError, match=r"stride must be in \[1, 10\], got 11"):
        ops.ablate_bands(x, 3, stride=11)
    with pytest.raises(ValueError, match=r"pass positions or stride, not both"):
        ops.ablate_bands(x, 3, [0, 1], stride=2)


def test_evaluate_records_the_stride_and_shards_merge_to_the_whole_run(tmp_path):
    import fastsmooth
    from fastsmooth.merge import merge_parts
    from fastsmooth.results import ResultsError, read_results

    model = tiny_net(1, 3, seed=1, scale=3.0, bias=0.5)
    images = torch.rand(9, 1, 8, 10, generator=torch.Generator().manual_seed(2))
    data = torch.utils.data.TensorDataset(images, torch.arange(9) % 3)
    strided = ColumnSmoothing(model, 3, 3, threshold=0.3, stride=4)
    fastsmooth.evaluate(strided, data, [1, 2], output=tmp_path / "whole.tsv", progress=False, batch_images=4)
    assert read_results(tmp_path / "whole.tsv").fingerprint["hyperparameters"]["stride"] == 4
    parts = []
    for k in (1, 2):
        path = tmp_path / f"part{k}.tsv"
        fastsmooth.evaluate(strided, data, [1, 2], output=path, progress=False, shard=f"{k}/2")
        parts.append(path)
    merged = merge_parts(parts)
    rows = read_results(tmp_path / "whole.tsv").rows
    assert [(r.index, r.prediction, r.certificate) for r in merged.rows] == \
        [(r.index, r.prediction, r.certificate) for r in rows]
    # another stride is another run: resuming the file is refused, naming the stride
    with pytest.raises(ResultsError, match=r"stride"):
        fastsmooth.evaluate(ColumnSmoothing(model, 3, 3, threshold=0.3, stride=2), data, [1, 2],
                            output=tmp_path / "whole.tsv", progress=False)


# -- the command line ----------------------------------------------------------------------------


def test_cli_certifies_with_a_stride_and_refuses_it_where_it_has_no_meaning(tmp_path, capsys):
    from fastsmooth.cli import main
    from fastsmooth.results import read_results

    g = torch.Generator().manual_seed(0)
    data = tmp_path / "tiny.pt"
    torch.save({"x": torch.randint(0, 256, (12, 1, 28, 28), generator=g).float() / 255, "y": torch.arange(12) % 10},
               data)
    ckpt = tmp_path / "column.pt"
    train = ["train", "--data", str(data), "--output", str(ckpt), "--epochs", "1", "--batch-size", "16", "--no-progress",
             "--method", "column", "--size", "4"]
    assert main(train) == 0
    # the checkpoint records the stride of its hyperparameters (1: training uses every position), not fixing it
    assert torch.load(ckpt, map_location="cpu", weights_only=True)["hyperparameters"]["stride"] == 1
    out = tmp_path / "strided.tsv"
    common = ["certify", "--no-progress", "--checkpoint", str(ckpt), "--data", str(data)]
    assert main([*common, "--output", str(out), "--stride", "5"]) == 0
    results = read_results(out)
    assert results.fingerprint["hyperparameters"]["stride"] == 5
    # the rows of the library's strided smoother built by hand from the checkpoint
    model = loaded(ckpt)
    smoother = ColumnSmoothing(model, 10, 4, threshold=0.3, stride=5)
    x = torch.load(data)["x"]
    expected = smoother.evaluate_batch(x)
    assert [r.prediction for r in results.rows] == expected.prediction.tolist()
    assert [r.certificate for r in results.rows] == expected.certificate.tolist()
    capsys.readouterr()
    errors = {
        ("--stride", "0"): r"stride=0 cannot be used on 28 x 28 images \(column bands\): it must be in \[1, 28\]",
        ("--stride", "29"): r"stride=29 cannot be used on 28 x 28 images \(column bands\)",
        ("--stride", "2", "3"): r"stride=\[2, 3\]: column bands take one stride",
        ("--method", "multi-band", "--keep", "2", "--override", "--stride", "2"):
            r"stride=2 has no meaning for method 'multi-band'",
    }
    for flags, message in errors.items():
        assert main([*common, "--output", str(tmp_path / "e.tsv"), *flags]) == 2
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if "error:" in line]  # (--override also warns, above it)
        assert len(lines) == 1 and re.search(message, lines[0]), err
    assert main([*train[:4], str(tmp_path / "other.pt"), *train[5:], "--stride", "2"]) == 2
    assert "--stride 2 applies to certification only" in capsys.readouterr().err


def loaded(path):
    from fastsmooth import models

    obj = torch.load(path, map_location="cpu", weights_only=True)
    model = models.build(obj["arch"], in_channels=obj["in_channels"], num_classes=obj["num_classes"])
    models.load_checkpoint(model, path)
    return model.eval()


def test_changing_the_stride_between_calls_changes_the_ablations():
    """Strides 8 and 9 keep as many bands of 28 columns (4): the early exit's cached order must
    follow the stride. Bright columns 9, 18 and 27 are seen at stride 9 only (bands of 1)."""
    model = Trigger(1, 2, default=0, target=1)
    x = torch.full((1, 1, 5, 28), 0.5)
    x[0, 0, 2, [9, 18, 27]] = 1.0
    smoother = ColumnSmoothing(model, 2, 1, stride=8)
    assert smoother.predict(x).tolist() == [0]
    smoother.stride = 9
    assert smoother.predict(x).tolist() == [1] and smoother.counts(x).tolist() == [[1, 3]]
