"""Shards for job arrays: a disjoint, exact split of a run's images, and the merge of the parts'
results files (equal to a single process's file; overlaps, gaps and foreign parts refused)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import fastsmooth
from fastsmooth.cli import main
from fastsmooth.merge import MergeError, merge_parts, write_merged
from fastsmooth.results import ResultsError, read_results
from fastsmooth.shards import Shard, parse_shard, selected


def test_parse_shard_and_its_errors():
    assert parse_shard("2/3") == Shard(2, 3) == parse_shard((2, 3)) == parse_shard(" 2 / 3 ")
    assert str(Shard(1, 4)) == "1/4"
    for bad in ("0/3", "4/3", "1/0"):
        with pytest.raises(ValueError, match=r"need 1 <= K <= N"):
            parse_shard(bad)
    with pytest.raises(ValueError, match=r"expected K/N"):
        parse_shard("2 of 3")


@pytest.mark.parametrize("skip, max, count", [(1, None, 3), (3, 50, 4), (2, 7, 5), (1, 2, 3)])
def test_shards_split_the_selection_exactly(skip, max, count):
    indices = range(60)
    whole = [i for i in indices if selected(i, skip, max)]
    parts = [[i for i in indices if selected(i, skip, max, Shard(k, count))] for k in range(1, count + 1)]
    assert sorted(i for part in parts for i in part) == whole  # disjoint, and together the selection
    assert max is None or all(len(p) <= -(-len(whole) // count) for p in parts)  # interleaved: balanced


def _data(n: int = 20) -> TensorDataset:
    g = torch.Generator().manual_seed(1)
    return TensorDataset(torch.randint(0, 256, (n, 1, 12, 12), generator=g).float() / 255, torch.arange(n) % 10)


def _smoother(threshold: float = 0.3) -> fastsmooth.ColumnSmoothing:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(2 * 12 * 12, 10))
    return fastsmooth.ColumnSmoothing(net, 10, size=3, threshold=threshold)


def _without_time(path: Path) -> list[str]:
    lines = path.read_text().splitlines()
    return lines[:2] + ["\t".join(line.split("\t")[:5]) for line in lines[2:]]


@pytest.fixture
def parts(tmp_path) -> list[Path]:
    """The three parts of a run over 20 images with skip 2 (10 selected images)."""
    paths = []
    for k in (1, 2, 3):
        path = tmp_path / f"part{k}.tsv"
        fastsmooth.evaluate(_smoother(), _data(), output=path, skip=2, shard=f"{k}/3", progress=False, batch_images=2)
        paths.append(path)
    return paths


def test_three_parts_merged_equal_a_single_process(parts, tmp_path):
    single = tmp_path / "single.tsv"
    fastsmooth.evaluate(_smoother(), _data(), output=single, skip=2, progress=False)
    merged = tmp_path / "merged.tsv"
    write_merged(merge_parts(list(reversed(parts))), merged, parts)  # the order of the parts does not matter
    assert _without_time(merged) == _without_time(single)  # the fingerprint line included
    assert [len(read_results(p).rows) for p in parts] == [4, 3, 3]


def test_a_shard_resumes_only_its_own_file(parts):
    with pytest.raises(ValueError, match=r"shard"):
        fastsmooth.evaluate(_smoother(), _data(), output=parts[0], skip=2, shard="2/3", progress=False)


def _rewrite(path: Path, keep=lambda line: True, add: str = "") -> None:
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:2] + [line for line in lines[2:] if keep(line)]) + add)


def test_merge_refuses_a_missing_part(parts):
    with pytest.raises(MergeError, match=r"shard\(s\) 2/3 missing"):
        merge_parts([parts[0], parts[2]])


def test_merge_refuses_a_part_given_twice(parts):
    with pytest.raises(MergeError, match=r"are both shard 1/3"):
        merge_parts([parts[0], parts[1], parts[2], parts[0]])


def test_merge_refuses_overlapping_rows(parts):
    stolen = parts[1].read_text().splitlines(keepends=True)[2]  # a row of shard 2 ...
    _rewrite(parts[0], add=stolen)  # ... also in shard 1's file
    with pytest.raises(MergeError, match=r"part1.tsv' \(shard 1/3\) holds image 2, which belongs to shard 2/3"):
        merge_parts(parts)


def test_merge_refuses_a_duplicated_row(parts):
    _rewrite(parts[2], add=parts[2].read_text().splitlines(keepends=True)[2])
    with pytest.raises(ResultsError, match=r"part3.tsv' line 6 repeats image 4 \(first on line 3\)"):
        merge_parts(parts)


def test_merge_refuses_a_gap(parts):
    _rewrite(parts[1], keep=lambda line: not line.startswith("8\t"))  # an unfinished job
    with pytest.raises(MergeError, match=r"part2.tsv' \(shard 2/3\) lacks 1 of its 3 images \(gap\): 8; run its job"):
        merge_parts(parts)


def test_merge_refuses_a_part_of_another_run(parts, tmp_path):
    foreign = tmp_path / "foreign.tsv"
    fastsmooth.evaluate(_smoother(threshold=0.5), _data(), output=foreign, skip=2, shard="3/3", progress=False)
    with pytest.raises(MergeError, match=r"foreign.tsv' is not a part of the run of .*threshold: 0.3 in .*0.5 in"):
        merge_parts([parts[0], parts[1], foreign])


def test_merge_refuses_a_file_that_is_not_a_part(parts, tmp_path):
    single = tmp_path / "single.tsv"
    fastsmooth.evaluate(_smoother(), _data(), output=single, skip=2, progress=False)
    with pytest.raises(MergeError, match=r"single.tsv' is not a shard part.*without --shard K/N"):
        merge_parts([single, *parts])


def test_merge_command(parts, tmp_path, capsys):
    out = tmp_path / "all.tsv"
    assert main(["merge", str(out), *map(str, parts), "--levels", "1", "2"]) == 0
    printed = capsys.readouterr().out
    assert "merged 3 parts, 10 images" in printed and "images: 10" in printed
    assert main(["merge", str(tmp_path / "x.tsv"), str(parts[0]), str(parts[1])]) == 2
    assert "error: shard(s) 3/3 missing" in capsys.readouterr().err
    assert main(["merge", str(parts[0]), *map(str, parts)]) == 2
    assert "is one of the parts" in capsys.readouterr().err


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> tuple[Path, Path]:
    """A column-smoothing checkpoint (one epoch) and its 14 training images as the data file."""
    folder = tmp_path_factory.mktemp("cli")
    data = folder / "tiny.pt"
    g = torch.Generator().manual_seed(0)
    torch.save({"x": torch.randint(0, 256, (14, 1, 28, 28), generator=g).float() / 255, "y": torch.arange(14) % 10}, data)
    ckpt = folder / "column.pt"
    assert main(["train", "--method", "column", "--size", "4", "--data", str(data), "--output", str(ckpt),
                 "--epochs", "1", "--no-progress"]) == 0
    return ckpt, data


def test_certify_shards_and_merge_on_the_command_line(checkpoint, tmp_path, capsys):
    ckpt, data = checkpoint
    common = ["certify", "--checkpoint", str(ckpt), "--data", str(data), "--skip", "1", "--max", "13", "--no-progress"]
    assert main([*common, "--output", str(tmp_path / "single.tsv")]) == 0
    for k in (1, 2, 3):
        assert main([*common, "--output", str(tmp_path / f"p{k}.tsv"), "--shard", f"{k}/3"]) == 0
    capsys.readouterr()
    assert main(["merge", str(tmp_path / "merged.tsv"), *(str(tmp_path / f"p{k}.tsv") for k in (3, 1, 2))]) == 0
    assert "merged 3 parts, 13 images" in capsys.readouterr().out
    assert _without_time(tmp_path / "merged.tsv") == _without_time(tmp_path / "single.tsv")


def test_certify_shard_flag_errors(checkpoint, tmp_path, capsys):
    ckpt, data = checkpoint
    with pytest.raises(SystemExit):
        main(["certify", "--checkpoint", str(ckpt), "--data", str(data), "--shard", "4/3"])
    assert "argument --shard: shard 4/3: need 1 <= K <= N" in capsys.readouterr().err
    assert main(["certify", "--checkpoint", str(ckpt), "--data", str(data), "--workers", "2"]) == 2
    assert "--workers apply to Ray workers: add --ray" in capsys.readouterr().err


def test_a_shard_needs_a_data_set_with_a_length():
    batches = [(torch.rand(4, 1, 12, 12), torch.arange(4))]  # an iterable of batches: no length
    with pytest.raises(ValueError, match=r"shard='1/2' needs a map-style data set"):
        fastsmooth.evaluate(_smoother(), batches, shard="1/2", progress=False)
