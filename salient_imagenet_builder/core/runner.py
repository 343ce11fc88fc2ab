"""The model stage of every pass over the source (the build's and discovery's scan): uint8 batches in, (spatial
maps, pooled features, logits) out, on the rank's own device.

Faster numerics are opt-in (off by default, each recorded in the card) because they change the activations
slightly: TF32 matmuls/convolutions on Ampere+ GPUs, bfloat16 autocast, and `torch.compile`.
"""

from contextlib import contextmanager

import torch

from .images import to_unit_float
from .options import Numerics
from .stages import StageTimer, synchronize


@contextmanager
def backend_flags(device: torch.device, numerics: Numerics):
    """The CUDA backend flags a forward pass wants, set for its duration only and then restored: the caller's
    process keeps the flags it chose. TF32 as `numerics` says; cuDNN's autotuner off: batch sizes vary (each
    unit's last batch, pass 2's selections), and on an H200 it spent ~3-4 s per new size on ResNet-50, which made
    a 4,096-image build's model stage 10.3 s instead of 1.8 s with cuDNN's own heuristics (within 10 % of the
    autotuned forward pass)."""
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = numerics.tf32
        with torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, benchmark=False,
                                        deterministic=torch.backends.cudnn.deterministic, allow_tf32=numerics.tf32):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved


class ModelRunner:
    """The model on the rank's own device: uint8 batches in, (spatial maps, pooled features, logits) out."""

    def __init__(self, model: torch.nn.Module, device: torch.device, numerics: Numerics, timer: StageTimer):
        self.device, self.numerics, self.timer = device, numerics, timer
        self.model = model.to(device, memory_format=torch.channels_last).eval()
        self.forward_fn = torch.compile(self.model) if numerics.compile else self.model
        self.images = 0  # images forwarded, for the card

    def __call__(self, batch_uint8: torch.Tensor):
        """`batch_uint8` may live in pinned host memory: the copy to the device does not block the host."""
        with self.timer("model"), torch.inference_mode(), backend_flags(self.device, self.numerics):
            x = to_unit_float(batch_uint8.to(self.device, non_blocking=True))
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.numerics.bf16):
                spatial, pooled, logits = self.forward_fn(x)
            spatial, pooled, logits = spatial.float(), pooled.float(), logits.float()
            synchronize(self.device)
        self.images += len(batch_uint8)
        return spatial, pooled, logits
