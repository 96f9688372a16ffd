"""Loading the papers' checkpoints into the networks of :mod:`fastsmooth.models`.

Accepted formats (all seen in the authors' released code):

* a raw state dict (``torch.save(net.state_dict())``);
* keys prefixed by ``module.`` (saved from ``nn.DataParallel``), at any depth: Cohen et al. save
  ``Sequential(NormalizeLayer, DataParallel(net))``, so their keys are ``1.module.conv1.weight``;
  a ``_orig_mod.`` segment (from ``torch.compile``) is dropped the same way;
* a dict holding the state dict under ``net`` (kuangliu-style ``{'net', 'acc', 'epoch'}``, used by
  the patch and l0 papers), ``state_dict`` (Cohen's ``{'arch', 'state_dict', 'optimizer', ...}``)
  or ``model_state_dict``.

Files are read with ``torch.load(map_location="cpu", weights_only=True)``, which cannot run code.
Numpy scalars and dtypes (a training script's ``'acc'`` may be a numpy float) are allow-listed for
it. A file that still needs full unpickling (e.g. a whole pickled ``nn.Module``, or other custom
classes) is refused unless the caller passes ``allow_pickle=True``: unpickling runs arbitrary code,
so that fallback is opt-in, for files the caller trusts, and warns when used.
"""
from __future__ import annotations

import os
import pickle
import warnings
from collections.abc import Mapping
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from torch import nn

__all__ = ["CheckpointError", "load_checkpoint", "extract_state_dict", "read_checkpoint", "looks_like_torch_file", "classes_in"]

#: Keys under which training scripts nest the state dict, tried in this order.
CONTAINER_KEYS = ("state_dict", "model_state_dict", "net")
#: Key segments that wrappers (DataParallel / DistributedDataParallel, torch.compile) insert.
WRAPPER_SEGMENTS = ("module", "_orig_mod")

StateDict = Dict[str, torch.Tensor]
PathOrState = Union[str, "os.PathLike[str]", Mapping, nn.Module]


class CheckpointError(ValueError):
    """A checkpoint could not be read, or does not fit the model (the message says why)."""


def _numpy_safe_globals() -> List[Any]:
    """Numpy classes that pickled numpy scalars / arrays need; they only rebuild plain values."""
    core = getattr(np, "_core", None) or np.core  # numpy 2 renamed np.core to np._core
    items: List[Any] = [core.multiarray.scalar, core.multiarray._reconstruct, np.ndarray, np.dtype]
    dtypes = getattr(np, "dtypes", None)  # the per-dtype classes exist since numpy 1.25
    if dtypes is not None:
        items += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")]
    return items


def _reason(err: Exception) -> str:
    """The informative line of torch's long weights-only refusal (which global it refused)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return next((ln for ln in lines if "WeightsUnpickler error" in ln), lines[0] if lines else repr(err))


def _refused_global(err: Exception) -> bool:
    """True when the safe loader refused a Python object (a class or function the file names),
    False when the pickle itself is damaged (then full unpickling cannot help either)."""
    text = str(err)
    return "Unsupported global" in text or "GLOBAL" in text or "safe_globals" in text.replace("add_safe_globals", "")


def read_checkpoint(
    path: Union[str, "os.PathLike[str]"], allow_pickle: bool = False, *, pickle_hint: str = "allow_pickle=True"
) -> Any:
    """``torch.load`` a file onto the CPU, safely (``weights_only=True``) unless told otherwise.

    Args:
        path: the checkpoint file.
        allow_pickle: retry with ``weights_only=False`` when the safe loader refuses the file.
            Only for trusted files: full unpickling can execute arbitrary code.
        pickle_hint: how the caller's user allows that (``--allow-pickle`` on the command line).
    """
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if not _refused_global(err):
            raise CheckpointError(
                f"{os.fspath(path)!r} is a corrupted or truncated checkpoint ({_reason(err)}); "
                "save or download it again"
            ) from err
        if not allow_pickle:
            raise CheckpointError(
                f"{os.fspath(path)!r} holds Python objects that torch.load(weights_only=True) refuses "
                f"({_reason(err)}). If you trust this file, pass {pickle_hint} to load "
                "it with weights_only=False (which can execute code from the file)."
            ) from err
    warnings.warn(f"loading {os.fspath(path)!r} with weights_only=False (allow_pickle=True): "
                  "it is not a plain tensor checkpoint", stacklevel=3)
    return torch.load(path, map_location="cpu", weights_only=False)


def _is_state_dict(obj: Any) -> bool:
    return (isinstance(obj, Mapping) and len(obj) > 0
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()))


def _describe(obj: Mapping) -> str:
    keys = [repr(k) for k in list(obj)[:12]]
    more = f" ... ({len(obj)} in all)" if len(obj) > 12 else ""
    return "[" + ", ".join(keys) + more + "]"


def extract_state_dict(obj: Any) -> StateDict:
    """Find the state dict inside a loaded checkpoint (see the module docstring for the formats)."""
    if isinstance(obj, nn.Module):
        return obj.state_dict()
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"checkpoint is a {type(obj).__name__}, not a state dict or a dict holding one")
    if _is_state_dict(obj):
        return dict(obj)
    for key in CONTAINER_KEYS:
        if key in obj:
            return extract_state_dict(obj[key])
    raise CheckpointError(
        f"no state dict found in checkpoint; its keys are {_describe(obj)}. Expected a state dict "
        f"(parameter name -> tensor) or a dict with one under one of {list(CONTAINER_KEYS)}."
    )


def _strip_wrappers(state: StateDict, model_keys: set) -> StateDict:
    """Drop DataParallel / torch.compile key segments the model itself does not have."""
    model_segments = {seg for k in model_keys for seg in k.split(".")}
    drop = [s for s in WRAPPER_SEGMENTS if s not in model_segments]
    if not drop:
        return dict(state)
    # A fresh dict also drops the saved `_metadata`: BatchNorm then treats the file as possibly
    # pre-0.4.1 and fills in a missing num_batches_tracked instead of failing.
    return {".".join(s for s in k.split(".") if s not in drop): v for k, v in state.items()}


def _shape_note(key: str, ckpt: Tuple[int, ...], want: Tuple[int, ...], first_key: str, last_key: str) -> str:
    if len(ckpt) == len(want) == 4 and ckpt[0] == want[0] and ckpt[2:] == want[2:] and ckpt[1] != want[1]:
        note = f"input channels: checkpoint {ckpt[1]}, model {want[1]}"
        if key == first_key:
            note += (f" -- the checkpoint was trained on {ckpt[1]}-channel inputs but the model takes "
                     f"{want[1]} (build it with in_channels={ckpt[1]})")
        return f" ({note})"
    if key in (last_key, last_key[: -len("weight")] + "bias") and ckpt[0] != want[0]:
        return f" (output classes: checkpoint {ckpt[0]}, model {want[0]}; build it with num_classes={ckpt[0]})"
    return ""


def _check_shapes(state: StateDict, model_state: StateDict) -> None:
    keys = list(model_state)
    first_key = next((k for k in keys if model_state[k].dim() == 4), "")
    last_key = next((k for k in reversed(keys) if k.endswith("weight") and model_state[k].dim() == 2), "")
    bad = []
    for k, v in model_state.items():
        if k in state and state[k].shape != v.shape:
            ckpt, want = tuple(state[k].shape), tuple(v.shape)
            bad.append(f"  {k}: checkpoint {ckpt} vs model {want}{_shape_note(k, ckpt, want, first_key, last_key)}")
    if bad:
        raise CheckpointError(f"checkpoint does not fit the model: {len(bad)} parameter(s) differ in shape:\n"
                              + "\n".join(bad))


def _key_hint(missing: List[str], unexpected: List[str]) -> str:
    """Point at the usual cause when every key differs by a leading Sequential index (Cohen)."""
    def drop_index(k: str) -> str:
        head, _, rest = k.partition(".")
        return rest if head.isdigit() else k
    if unexpected and {drop_index(k) for k in unexpected} >= set(missing):
        return ("\nThe checkpoint keys carry a leading Sequential index: it looks like Cohen et al.'s "
                "Sequential(NormalizeLayer, net); build the model with cohen_architecture(...) "
                "(or build('cohen_cifar_resnet110') / build('cohen_imagenet_resnet50')).")
    if missing and {drop_index(k) for k in missing} >= set(unexpected):
        return ("\nThe model keys carry a leading Sequential index the checkpoint lacks: load the checkpoint "
                "into the wrapped network (e.g. model[1]) instead.")
    return ""


def load_checkpoint(model: nn.Module, path_or_state: PathOrState, strict: bool = True,
                    *, allow_pickle: bool = False):
    """Load a checkpoint in any of the authors' formats into ``model`` (on its current device).

    Args:
        model: the network to fill, e.g. from :func:`fastsmooth.models.build`.
        path_or_state: a file path, an already loaded checkpoint object (state dict or a dict
            holding one), or an ``nn.Module`` whose state is copied.
        strict: require the checkpoint's keys to match the model's exactly (after removing
            ``module.`` prefixes). Shapes must always match.
        allow_pickle: let :func:`read_checkpoint` fall back to ``weights_only=False`` for trusted
            files that the safe loader refuses.

    Returns:
        ``torch``'s ``(missing_keys, unexpected_keys)`` named tuple (both empty when ``strict``).

    Raises:
        CheckpointError: unreadable file, no state dict inside (the message lists the keys
            found), key mismatch under ``strict``, or any shape mismatch (the message names each
            parameter with both shapes and says when input channels or classes differ).
    """
    if isinstance(path_or_state, (str, os.PathLike)):
        obj = read_checkpoint(path_or_state, allow_pickle=allow_pickle)
    else:
        obj = path_or_state
    model_state = model.state_dict()
    state = _strip_wrappers(extract_state_dict(obj), set(model_state))
    _check_shapes(state, model_state)
    # Checkpoints from before torch 0.4.1 have no BatchNorm num_batches_tracked; BatchNorm fills it.
    missing = [k for k in model_state if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in model_state]
    if strict and (missing or unexpected):
        def show(keys: List[str]) -> str:
            return ", ".join(keys[:8]) + (f" ... ({len(keys)} in all)" if len(keys) > 8 else "")
        raise CheckpointError(
            "checkpoint keys do not match the model"
            + (f"\n  missing from checkpoint: {show(missing)}" if missing else "")
            + (f"\n  unexpected in checkpoint: {show(unexpected)}" if unexpected else "")
            + _key_hint(missing, unexpected)
        )
    return model.load_state_dict(state, strict=False)


def looks_like_torch_file(path: Union[str, os.PathLike]) -> bool:
    """Whether ``path`` starts like a torch.save file: a zip archive, or (legacy files) a pickle,
    whose first byte is PROTO 0x80. Checked before loading so that e.g. a text file gets a plain
    message, not an unpickling error."""
    with open(path, "rb") as f:
        head = f.read(4)
    return head[:2] == b"PK" or head[:1] == b"\x80"


def classes_in(obj: Any) -> Optional[int]:
    """Output classes of a checkpoint without metadata: rows of its last 2-D weight (None if
    the object holds no state dict or no 2-D weight)."""
    try:
        state = extract_state_dict(obj)
    except ValueError:
        return None
    last = [v for k, v in state.items() if k.endswith("weight") and v.dim() == 2]
    return int(last[-1].shape[0]) if last else None
