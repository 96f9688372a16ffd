"""fastsmooth.evaluate: one TSV row per image, resume after an interruption, skip / max, summary."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fastsmooth
from fastsmooth.evaluate import read_results
from fastsmooth.smoothing import Certified


class IndexSmoother:
    """Reads the image index back from the pixels (index / 1000): prediction index % 3, certificate index % 4.
    Records every index it certifies."""

    certificate_name = "patch_size"

    def __init__(self, fail_after: int | None = None):
        # private: public attributes are a smoother's hyperparameters, part of the run fingerprint
        self._seen: list[int] = []
        self._fail_after = fail_after

    @property
    def seen(self) -> list[int]:
        return self._seen

    def evaluate_batch(self, x: torch.Tensor) -> Certified:
        if self._fail_after is not None and len(self._seen) >= self._fail_after:
            raise KeyboardInterrupt("interrupted")
        index = (x[:, 0, 0, 0] * 1000).round().long()
        self._seen += index.tolist()
        return Certified(index % 3, (index % 4).double())


def index_data(n: int = 23) -> TensorDataset:
    images = (torch.arange(n, dtype=torch.float32) / 1000).view(n, 1, 1, 1).expand(n, 1, 4, 4).contiguous()
    return TensorDataset(images, torch.arange(n) % 2)


def table(path) -> list[tuple]:
    """The file's rows without the timing column."""
    return [(r.index, r.label, r.prediction, r.certificate, r.correct) for r in read_results(path).rows]


def test_rows_and_summary(tmp_path):
    out = tmp_path / "res.tsv"
    summary = fastsmooth.evaluate(IndexSmoother(), index_data(12), levels=(1, 3), output=out, batch_images=5, progress=False)
    lines = out.read_text().splitlines()
    assert lines[0].startswith("# fastsmooth-run {")
    assert lines[1] == "idx\tlabel\tpredict\tpatch_size\tcorrect\ttime"
    assert lines[2].split("\t")[:5] == ["0", "0", "0", "0", "1"]
    assert lines[5].split("\t")[:5] == ["3", "1", "0", "3", "0"]
    # label i % 2, prediction i % 3: correct for i in {0, 1, 6, 7}, with certificates 0, 1, 2, 3
    assert summary.count == 12
    assert summary.clean_accuracy == pytest.approx(4 / 12)
    assert summary.certified_accuracy == {1.0: pytest.approx(3 / 12), 3.0: pytest.approx(1 / 12)}
    assert [r.index for r in summary.rows] == list(range(12))


def test_resume_after_interruption_gives_the_same_file(tmp_path):
    data = index_data(23)
    full = tmp_path / "full.tsv"
    fastsmooth.evaluate(IndexSmoother(), data, levels=(1,), output=full, batch_images=4, progress=False)

    part = tmp_path / "part.tsv"
    with pytest.raises(KeyboardInterrupt):
        fastsmooth.evaluate(IndexSmoother(fail_after=8), data, output=part, batch_images=4, progress=False)
    assert [r.index for r in read_results(part).rows] == list(range(8))
    with part.open("a") as f:
        f.write("8\t0\t2")  # killed in the middle of a row
    smoother = IndexSmoother()
    summary = fastsmooth.evaluate(smoother, data, levels=(1,), output=part, batch_images=4, progress=False)
    assert smoother.seen == list(range(8, 23))  # finished rows are not recomputed
    assert table(part) == table(full)
    assert summary.count == 23
    assert summary.clean_accuracy == fastsmooth.evaluate(IndexSmoother(), data, progress=False).clean_accuracy

    again = IndexSmoother()
    fastsmooth.evaluate(again, data, output=part, progress=False)
    assert again.seen == [] and table(part) == table(full)
    fastsmooth.evaluate(again, data, output=part, resume=False, progress=False)
    assert again.seen == list(range(23)) and table(part) == table(full)


def test_loader_batches_iterables_skip_and_max(tmp_path):
    data = index_data(23)
    reference = fastsmooth.evaluate(IndexSmoother(), data, skip=3, max=17, progress=False)
    assert [r.index for r in reference.rows] == [0, 3, 6, 9, 12, 15]
    loader = DataLoader(data, batch_size=5)
    batched = fastsmooth.evaluate(IndexSmoother(), loader, skip=3, max=17, output=tmp_path / "a.tsv", progress=False)
    pairs = fastsmooth.evaluate(IndexSmoother(), iter(list(data)), skip=3, max=17, progress=False)
    strip = lambda s: [(r.index, r.prediction, r.certificate, r.correct) for r in s.rows]  # noqa: E731
    assert strip(batched) == strip(reference) == strip(pairs)
    assert [r[0] for r in table(tmp_path / "a.tsv")] == [0, 3, 6, 9, 12, 15]


def test_real_smoother_resume(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 10 * 10, 3))
    with torch.no_grad():
        model[1].bias.copy_(torch.tensor([2.0, 0.0, 0.0]))
    data = TensorDataset(torch.rand(9, 1, 10, 10), torch.randint(3, (9,)))
    smoother = fastsmooth.ColumnSmoothing(model, 3, size=3, threshold=0.3, batch_size=25)
    full = fastsmooth.evaluate(smoother, data, levels=(1, 2), output=tmp_path / "full.tsv", batch_images=4, progress=False)
    lines = (tmp_path / "full.tsv").read_text().splitlines(keepends=True)
    (tmp_path / "part.tsv").write_text("".join(lines[:7]))  # interrupted after 5 images
    resumed = fastsmooth.evaluate(smoother, data, levels=(1, 2), output=tmp_path / "part.tsv", batch_images=3, progress=False)
    assert table(tmp_path / "part.tsv") == table(tmp_path / "full.tsv")
    assert resumed.certified_accuracy == full.certified_accuracy
    direct = smoother.evaluate_batch(data.tensors[0])
    assert [r.prediction for r in full.rows] == direct.prediction.tolist()
    assert [r.certificate for r in full.rows] == direct.certificate.tolist()


def test_errors(tmp_path):
    out = tmp_path / "other.tsv"
    out.write_text("idx\tlabel\tpredict\tradius\tcorrect\ttime\n")  # no fingerprint line
    with pytest.raises(ValueError, match="fingerprint"):
        fastsmooth.evaluate(IndexSmoother(), index_data(3), output=out, progress=False)
    with pytest.raises(ValueError, match="skip"):
        fastsmooth.evaluate(IndexSmoother(), index_data(3), skip=0, progress=False)
    with pytest.raises(ValueError, match="max"):
        fastsmooth.evaluate(IndexSmoother(), index_data(3), max=-1, progress=False)
    with pytest.raises(TypeError, match="smoother"):
        fastsmooth.evaluate(object(), index_data(3), progress=False)
