"""evaluate(decide=True): per-level answers and forwards in the TSV, resume, summary."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

import fastsmooth
from fastsmooth.results import ResultsError, read_results
from fastsmooth.smoothing.base import Decided


class IndexDecider:
    """Prediction index % 3, certified at level t iff index % 4 >= t, forwards 10 * index."""

    certificate_name = "radius"

    def __init__(self, fail_after: int | None = None):
        self._seen: list[int] = []
        self._fail_after = fail_after

    def evaluate_batch(self, x):  # pragma: no cover - level mode never calls it
        raise AssertionError("level mode must call decide_batch")

    def decide_batch(self, x: torch.Tensor, levels) -> Decided:
        if self._fail_after is not None and len(self._seen) >= self._fail_after:
            raise KeyboardInterrupt("interrupted")
        index = (x[:, 0, 0, 0] * 100).round().long()
        self._seen += index.tolist()
        certified = torch.stack([(index % 4) >= t for t in levels], dim=1)
        return Decided(index % 3, certified, 10 * index)


def data(n: int) -> TensorDataset:
    images = (torch.arange(n, dtype=torch.float32) / 100).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    return TensorDataset(images, torch.arange(n) % 2)


def test_level_rows_summary_and_resume(tmp_path):
    out = tmp_path / "levels.tsv"
    with pytest.raises(KeyboardInterrupt):
        fastsmooth.evaluate(IndexDecider(fail_after=4), data(12), levels=(1, 3), output=out, batch_images=4,
                            progress=False, decide=True)
    resumed = IndexDecider()
    summary = fastsmooth.evaluate(resumed, data(12), levels=(1, 3), output=out, batch_images=4, progress=False,
                                  decide=True)
    assert resumed._seen == list(range(4, 12))  # finished rows are not recomputed
    lines = out.read_text().splitlines()
    assert lines[0].startswith("# fastsmooth-run ") and '"decide":[1.0,3.0]' in lines[0]
    assert lines[1] == "idx\tlabel\tpredict\tradius\tcorrect\ttime\tforwards\tcertified@1\tcertified@3"
    fields = lines[5].split("\t")  # image 3: prediction 0, certified at both levels, 30 forwards
    assert fields[:5] == ["3", "1", "0", "3", "0"] and fields[6:] == ["30", "1", "1"]
    rows = read_results(out).rows
    assert [r.index for r in rows] == list(range(12))
    assert [r.certificate for r in rows[:4]] == [-1.0, 1.0, 1.0, 3.0]  # the largest level certified, -1: none
    # correct for i in {0, 1, 6, 7}: certified at 1 for 1, 6, 7 and at 3 for 7
    assert summary.certified_accuracy == {1.0: pytest.approx(3 / 12), 3.0: pytest.approx(1 / 12)}
    assert summary.forwards_per_image == pytest.approx(55)
    with pytest.raises(ValueError, match="decide"):  # a level-mode file never resumes into a full run
        fastsmooth.evaluate(IndexDecider(), data(12), levels=(1, 3), output=out, progress=False)


def test_level_mode_needs_levels_and_decide_batch(tmp_path):
    with pytest.raises(ValueError, match="levels"):
        fastsmooth.evaluate(IndexDecider(), data(2), levels=(), decide=True, progress=False)

    class NoDecide:
        certificate_name = "radius"

        def evaluate_batch(self, x):
            raise AssertionError

    with pytest.raises(TypeError, match="decide_batch"):
        fastsmooth.evaluate(NoDecide(), data(2), levels=(1,), decide=True, progress=False)


def test_level_mode_on_a_real_smoother_matches_certify(tmp_path):
    from test_patch_smoothing import tiny_net

    smoother = fastsmooth.ColumnSmoothing(tiny_net(1, 3, seed=0), 3, 2, batch_size=16)
    images = torch.rand(5, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    dataset = TensorDataset(images, torch.tensor([0, 1, 2, 0, 1]))
    summary = fastsmooth.evaluate(smoother, dataset, levels=(1, 2), progress=False, decide=True)
    full = fastsmooth.evaluate(smoother, dataset, levels=(1, 2), progress=False)
    assert summary.certified_accuracy == full.certified_accuracy
    assert summary.clean_accuracy == full.clean_accuracy
    assert 1 <= summary.forwards_per_image <= 6


def test_level_mode_of_a_randomized_smoother_records_its_sequential_procedure(tmp_path):
    """A level-mode file of a sampling smoother names the sequential procedure (rule, selection)
    in its fingerprint: a file begun under another one (here: one without the entry, as files
    from before adaptive selection) is refused, not resumed into a mix of both."""
    from fastsmooth.engine.deciders import DECISION
    from test_patch_smoothing import tiny_net

    torch.manual_seed(0)
    smoother = fastsmooth.Smooth(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 3)), 3, 0.5,
                                 batch_size=64)
    images = torch.rand(4, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    dataset = TensorDataset(images, torch.tensor([0, 1, 2, 0]))
    out = tmp_path / "levels.tsv"
    kwargs = dict(levels=(0.1,), progress=False, decide=True, seed=0)
    fastsmooth.evaluate(smoother, dataset, output=out, **kwargs)
    assert read_results(out).fingerprint["decision"] == DECISION
    lines = out.read_text().splitlines(keepends=True)
    lines[0] = lines[0].replace('"decision":', '"old":')
    out.write_text("".join(lines))
    with pytest.raises(ResultsError, match="decision"):
        fastsmooth.evaluate(smoother, dataset, output=out, **kwargs)
    # exact deciders (every ablation smoother without noise) record none: their answers do not depend on it
    column = tmp_path / "column.tsv"
    fastsmooth.evaluate(fastsmooth.ColumnSmoothing(tiny_net(1, 3, seed=0), 3, 2, batch_size=16), dataset,
                        levels=(1,), progress=False, decide=True, output=column)
    assert "decision" not in read_results(column).fingerprint
