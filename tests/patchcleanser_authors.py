"""PatchCleanser's mask set, certification and double-masking inference as the authors define them
(Xiang et al., USENIX Security 2022, Algorithm 1; inspire-group/PatchCleanser: utils/defense.py
``gen_mask_set`` / ``double_masking`` / ``double_masking_precomputed`` / ``certify_precomputed``
and the two-mask loop of pc_certification.py), transcribed for the parity tests and the
benchmark's baseline. Their logic, step for step, with the CUDA calls dropped:

- masks are full-size boolean tensors (True = kept), applied with ``torch.where(mask, x, 0)``;
- one model call per mask pair (i <= j), on a batch of images, the map made symmetric;
- certified iff every entry of the two-mask map (diagonal: one-mask) equals the label;
- double masking: unanimous one-mask predictions -> that class; else the majority (``np.unique``
  + ``argsort`` of the counts, last entry) and, for each disagreer mask in index order, its
  whole row of two-mask predictions equal to its own class -> that class; else the majority.

One choice is pinned: ``argsort(kind="stable")`` for the majority. The authors call the default
sort, which NumPy runs as an insertion sort (stable) for arrays as short as a class count; the
stable sort says so explicitly (ties go to the largest class).
"""
from __future__ import annotations

import numpy as np
import torch


def gen_mask_set(img_size, patch_size, num_mask=-1, mask_stride=-1):
    """(mask_list of bool [1, 1, H, W], MASK_SIZE, MASK_STRIDE), as the authors' gen_mask_set.
    ``img_size`` and ``patch_size`` are (first axis, second axis)."""
    assert mask_stride * num_mask < 0  # set either mask_stride or num_mask
    IMG_SIZE, PATCH_SIZE = tuple(img_size), tuple(patch_size)
    if mask_stride > 0:
        MASK_STRIDE = (mask_stride, mask_stride)
    else:
        MASK_STRIDE = (int(np.ceil((IMG_SIZE[0] - PATCH_SIZE[0] + 1) / num_mask)),
                       int(np.ceil((IMG_SIZE[1] - PATCH_SIZE[1] + 1) / num_mask)))
    MASK_SIZE = (min(PATCH_SIZE[0] + MASK_STRIDE[0] - 1, IMG_SIZE[0]),
                 min(PATCH_SIZE[1] + MASK_STRIDE[1] - 1, IMG_SIZE[1]))
    mask_list = []
    idx_list1 = list(range(0, IMG_SIZE[0] - MASK_SIZE[0] + 1, MASK_STRIDE[0]))
    if (IMG_SIZE[0] - MASK_SIZE[0]) % MASK_STRIDE[0] != 0:
        idx_list1.append(IMG_SIZE[0] - MASK_SIZE[0])
    idx_list2 = list(range(0, IMG_SIZE[1] - MASK_SIZE[1] + 1, MASK_STRIDE[1]))
    if (IMG_SIZE[1] - MASK_SIZE[1]) % MASK_STRIDE[1] != 0:
        idx_list2.append(IMG_SIZE[1] - MASK_SIZE[1])
    for x in idx_list1:
        for y in idx_list2:
            mask = torch.ones([1, 1, IMG_SIZE[0], IMG_SIZE[1]], dtype=bool)
            mask[..., x : x + MASK_SIZE[0], y : y + MASK_SIZE[1]] = False
            mask_list.append(mask)
    return mask_list, MASK_SIZE, MASK_STRIDE


@torch.inference_mode()
def prediction_maps(model, data, mask_list):
    """int [B, M, M]: the two-mask predictions of every image (diagonal: one-mask), one model
    call per pair i <= j on the whole batch, then made symmetric (pc_certification.py)."""
    num_img, num_mask = data.shape[0], len(mask_list)
    prediction_map = np.zeros([num_img, num_mask, num_mask], dtype=int)
    zero = torch.tensor(0.0, dtype=data.dtype)
    for i, mask in enumerate(mask_list):
        for j in range(i, num_mask):
            mask2 = mask_list[j]
            masked_output = model(torch.where(torch.logical_and(mask, mask2), data, zero))
            _, masked_pred = masked_output.max(1)
            prediction_map[:, i, j] = masked_pred.numpy()
    upper = prediction_map
    return upper + upper.transpose(0, 2, 1) - np.einsum("bii->bi", upper)[:, :, None] * np.eye(num_mask, dtype=int)


def certify_precomputed(prediction_map, label):
    return bool(np.all(prediction_map == label))


def double_masking_precomputed(prediction_map):
    pred_one_mask = np.diag(prediction_map)
    pred, cnt = np.unique(pred_one_mask, return_counts=True)
    if len(pred) == 1:  # Case I
        return int(pred[0])
    sorted_idx = np.argsort(cnt, kind="stable")
    majority_pred = pred[sorted_idx][-1]
    disagreer_pred = pred[sorted_idx][:-1]
    tmp = np.zeros_like(pred_one_mask, dtype=bool)
    for dis in disagreer_pred:
        tmp = np.logical_or(tmp, pred_one_mask == dis)
    for i in np.where(tmp)[0]:
        dis = pred_one_mask[i]
        if np.all(prediction_map[i] == dis):
            return int(dis)  # Case II
    return int(majority_pred)  # Case III


@torch.inference_mode()
def double_masking(data, mask_list, model):
    """The authors' online double masking: one-mask predictions batched over images, then one model
    call per two-mask pair of each disagreer, image by image, stopping a row at its first
    disagreement."""
    num_img, num_mask = len(data), len(mask_list)
    zero = torch.tensor(0.0, dtype=data.dtype)
    pred_one_mask_batch = np.zeros([num_img, num_mask], dtype=int)
    for i, mask in enumerate(mask_list):
        pred_one_mask_batch[:, i] = model(torch.where(mask, data, zero)).max(1)[1].numpy()
    output_pred = np.zeros([num_img], dtype=int)
    for j in range(num_img):
        pred_one_mask = pred_one_mask_batch[j]
        pred, cnt = np.unique(pred_one_mask, return_counts=True)
        if len(pred) == 1:
            defense_pred = pred[0]
        else:
            sorted_idx = np.argsort(cnt, kind="stable")
            majority_pred = pred[sorted_idx][-1]
            disagreer_pred = pred[sorted_idx][:-1]
            tmp = np.zeros_like(pred_one_mask, dtype=bool)
            for dis in disagreer_pred:
                tmp = np.logical_or(tmp, pred_one_mask == dis)
            flg = False
            for i in np.where(tmp)[0]:
                dis = pred_one_mask[i]
                mask = mask_list[i]
                flg = True
                for mask2 in mask_list:
                    masked_pred = model(torch.where(torch.logical_and(mask, mask2), data[j], zero)).max(1)[1].item()
                    if masked_pred != dis:
                        flg = False
                        break
                if flg:
                    defense_pred = dis
                    break
            if not flg:
                defense_pred = majority_pred
        output_pred[j] = defense_pred
    return output_pred


def authors_certification(model, data, labels, mask_list):
    """(certified bool [B], double-masking prediction int [B]) as pc_certification.py computes them."""
    maps = prediction_maps(model, data, mask_list)
    certified = np.array([certify_precomputed(m, int(y)) for m, y in zip(maps, labels)])
    predicted = np.array([double_masking_precomputed(m) for m in maps])
    return certified, predicted, maps
