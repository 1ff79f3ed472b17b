"""Attention kernel selection shared by the tokenizer and the generator.

Every attention goes through `F.scaled_dot_product_attention`. One exception to PyTorch's own
kernel choice: on CPU, for bf16 training, its flash kernel's backward pass is several times slower
than the math kernel at the short sequences of the tiny scale (`bench/bench_tokenizer.py` measures
it; bench/README.md), so that case uses the math kernel.
CUDA and inference keep PyTorch's choice (flash / memory-efficient).

The math kernel is called as its own op rather than under `sdpa_kernel(SDPBackend.MATH)`: the
same computation, bit for bit, but a context manager inside a `torch.compile`d block makes
AOTAutograd bypass its on-disk cache, so that every training job would re-trace the joint graph
of each block, most of the time of a warm-cache compile.
"""

import torch
import torch.nn.functional as F


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v for q, k, v: (B, heads, T, head_dim)."""
    if q.device.type == "cpu" and q.dtype == torch.bfloat16 and q.requires_grad and torch.is_grad_enabled():
        return torch.ops.aten._scaled_dot_product_attention_math(q, k, v)[0]
    return F.scaled_dot_product_attention(q, k, v)
