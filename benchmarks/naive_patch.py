"""Column and block certification written like the authors' released code (the baseline of
the Table 9 benchmarks): a Python loop over positions, zero tensors, slice copies with the
wraparound cases, a channel concatenation, one forward per position, votes summed on the
device, then the certificate computed with NumPy on the host."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _votes(net, out, threshold, num_classes):
    softmx = F.softmax(net(out), dim=1)
    if threshold is None:
        return F.one_hot(softmx.argmax(1), num_classes).int()
    return (softmx >= threshold).int()


def _certify(predictions, delta):
    p = predictions.cpu().numpy()
    idxsort = np.argsort(-p, axis=1, kind="stable")
    valsort = -np.sort(-p, axis=1, kind="stable")
    val, idx, valsecond, idxsecond = valsort[:, 0], idxsort[:, 0], valsort[:, 1], idxsort[:, 1]
    cert = (val - valsecond > 2 * delta) | ((val - valsecond == 2 * delta) & (idx < idxsecond))
    return torch.tensor(idx), torch.tensor(cert)


@torch.inference_mode()
def naive_column_certify(net, inpt, block_size, size_to_certify, num_classes, threshold=0.2):
    predictions = torch.zeros(inpt.size(0), num_classes, dtype=torch.int, device=inpt.device)
    batch = inpt.permute(0, 2, 3, 1)  # channels last, as the authors' code
    W = batch.size(2)
    for pos in range(W):
        out_c1 = torch.zeros(batch.shape, device=inpt.device)
        out_c2 = torch.zeros(batch.shape, device=inpt.device)
        if pos + block_size > W:
            out_c1[:, :, pos:] = batch[:, :, pos:]
            out_c2[:, :, pos:] = 1.0 - batch[:, :, pos:]
            out_c1[:, :, : pos + block_size - W] = batch[:, :, : pos + block_size - W]
            out_c2[:, :, : pos + block_size - W] = 1.0 - batch[:, :, : pos + block_size - W]
        else:
            out_c1[:, :, pos : pos + block_size] = batch[:, :, pos : pos + block_size]
            out_c2[:, :, pos : pos + block_size] = 1.0 - batch[:, :, pos : pos + block_size]
        out = torch.cat((out_c1.permute(0, 3, 1, 2), out_c2.permute(0, 3, 1, 2)), 1)
        predictions += _votes(net, out, threshold, num_classes)
    return _certify(predictions, size_to_certify + block_size - 1)


@torch.inference_mode()
def naive_block_certify(net, inpt, block_size, size_to_certify, num_classes, threshold=0.2):
    predictions = torch.zeros(inpt.size(0), num_classes, dtype=torch.int, device=inpt.device)
    batch = inpt.permute(0, 2, 3, 1)
    H, W = batch.size(1), batch.size(2)
    for xcorner in range(H):
        for ycorner in range(W):
            out_c1 = torch.zeros(batch.shape, device=inpt.device)
            out_c2 = torch.zeros(batch.shape, device=inpt.device)
            xs = [(xcorner, min(xcorner + block_size, H))]
            if xcorner + block_size > H:
                xs.append((0, xcorner + block_size - H))
            ys = [(ycorner, min(ycorner + block_size, W))]
            if ycorner + block_size > W:
                ys.append((0, ycorner + block_size - W))
            for x0, x1 in xs:
                for y0, y1 in ys:
                    out_c1[:, x0:x1, y0:y1] = batch[:, x0:x1, y0:y1]
                    out_c2[:, x0:x1, y0:y1] = 1.0 - batch[:, x0:x1, y0:y1]
            out = torch.cat((out_c1.permute(0, 3, 1, 2), out_c2.permute(0, 3, 1, 2)), 1)
            predictions += _votes(net, out, threshold, num_classes)
    return _certify(predictions, (size_to_certify + block_size - 1) ** 2)
