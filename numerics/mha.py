"""``nn.MultiheadAttention`` spelled out, so that emulation sees every product in it.

``emulate(model, target)`` swaps ``nn.Linear`` modules by name and intercepts functional calls
(``F.linear``, ``torch.matmul``, ``torch.softmax``, ``F.scaled_dot_product_attention``) with a
``TorchFunctionMode``. ``nn.MultiheadAttention`` escapes both:

* its input projection is one packed ``in_proj_weight`` parameter (not a Linear) and its
  ``out_proj`` is a Linear subclass that the module reads directly (``out_proj.weight``), so neither
  is swapped; compute-in-memory targets need Q, K, V and the output projection as four separate
  Linears, each mapped onto its own crossbar;
* it calls ``F.multi_head_attention_forward``, a composite whose ``bmm``/``baddbmm`` and softmax are
  hidden from the function mode (the mode sees the composite only);
* in eval it may take fused kernels (``torch._native_multi_head_attention``; in
  ``nn.TransformerEncoderLayer``/``nn.TransformerEncoder`` also ``torch._transformer_encoder_layer_fwd``
  and nested tensors) that bypass Python altogether.

:class:`SpelledOutAttention` computes what ``F.multi_head_attention_forward`` computes, with
separate ``q_proj``/``k_proj``/``v_proj``/``out_proj`` Linears, and either one
``F.scaled_dot_product_attention`` call (``need_weights=False``) or ``torch.matmul`` / ``torch.softmax``
/ ``torch.matmul`` (``need_weights=True``). :func:`spell_out_attention_` replaces the attention modules
of a model in place (run it before ``emulate``).
"""

from __future__ import annotations

import collections
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SpelledOutAttention", "spell_out_attention_"]

SWAP_KEY = "MultiheadAttention -> SpelledOutAttention"


class _NoFusedKernel(torch.Tensor):
    """Type of the packed ``in_proj_weight``/``in_proj_bias`` views. ``nn.TransformerEncoder.forward``
    decides on nested tensors from ``use_nested_tensor``, fixed when it was built (possibly around a
    real ``nn.MultiheadAttention``), and backs off only when ``has_torch_function`` holds for one of the
    tensors it reads: any Tensor subclass has a ``__torch_function__``, so it does."""


def _param(t: Tensor | None, source: Tensor | None = None) -> nn.Parameter | None:
    """A copy of ``t`` (a parameter, or a slice of the parameter ``source``) as a new parameter. The
    flag comes from the parameter itself: a slice taken under ``torch.no_grad()`` never requires grad."""
    source = t if source is None else source
    return None if t is None else nn.Parameter(t.detach().clone(), requires_grad=source.requires_grad)


class SpelledOutAttention(nn.Module):
    """``nn.MultiheadAttention`` spelled out with separate projections ``q_proj``, ``k_proj``,
    ``v_proj``, ``out_proj`` (plain ``nn.Linear``) and attention by ``F.scaled_dot_product_attention``
    (``need_weights=False``) or ``torch.matmul`` + ``torch.softmax`` (``need_weights=True``).

    Takes ``nn.MultiheadAttention``'s arguments and its ``forward``'s, with the same semantics
    (``F.multi_head_attention_forward``'s). Built directly, the projections are initialised like
    ``nn.Linear``; :meth:`from_module` carries an existing module's parameters.
    """

    # nn.TransformerEncoderLayer.forward and nn.TransformerEncoder.__init__ take their fused path only
    # if this is True; False sends them through ``self_attn(...)``, i.e. through this module's forward.
    # (An encoder built earlier, around nn.MultiheadAttention, is stopped by _NoFusedKernel instead.)
    _qkv_same_embed_dim = False

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        add_bias_kv: bool = False,
        add_zero_attn: bool = False,
        kdim: int | None = None,
        vdim: int | None = None,
        batch_first: bool = False,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        if embed_dim <= 0 or num_heads <= 0:
            raise ValueError(f"embed_dim and num_heads must be greater than 0, got {embed_dim} and {num_heads}")
        if embed_dim % num_heads:
            raise AssertionError("embed_dim must be divisible by num_heads")
        factory = {"device": device, "dtype": dtype}
        self.embed_dim = embed_dim
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout = dropout
        self.batch_first = batch_first
        self.add_zero_attn = add_zero_attn
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)
        self.k_proj = nn.Linear(self.kdim, embed_dim, bias=bias, **factory)
        self.v_proj = nn.Linear(self.vdim, embed_dim, bias=bias, **factory)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)
        if add_bias_kv:
            self.bias_k = nn.Parameter(nn.init.xavier_normal_(torch.empty(1, 1, embed_dim, **factory)))
            self.bias_v = nn.Parameter(nn.init.xavier_normal_(torch.empty(1, 1, embed_dim, **factory)))
        else:
            self.bias_k = self.bias_v = None

    @classmethod
    def from_module(cls, mha: nn.MultiheadAttention) -> SpelledOutAttention:
        """A ``SpelledOutAttention`` computing what ``mha`` computes: its options, its training mode and
        copies (on its device, in its dtype, with its ``requires_grad``) of its parameters."""
        e = mha.embed_dim
        packed_w, packed_b = mha.in_proj_weight, mha.in_proj_bias
        if packed_w is not None:
            weights = [_param(w, packed_w) for w in packed_w.split(e)]
        else:
            weights = [_param(w) for w in (mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight)]
        biases = [None] * 3 if packed_b is None else [_param(b, packed_b) for b in packed_b.split(e)]
        new = cls(
            e,
            mha.num_heads,
            dropout=mha.dropout,
            bias=mha.in_proj_bias is not None,
            add_bias_kv=mha.bias_k is not None,
            add_zero_attn=mha.add_zero_attn,
            kdim=mha.kdim,
            vdim=mha.vdim,
            batch_first=mha.batch_first,
            device=weights[0].device,
            dtype=weights[0].dtype,
        )
        for proj, w, b in zip((new.q_proj, new.k_proj, new.v_proj), weights, biases):
            proj.weight, proj.bias = w, b
        new.out_proj.weight, new.out_proj.bias = _param(mha.out_proj.weight), _param(mha.out_proj.bias)
        new.bias_k, new.bias_v = _param(mha.bias_k), _param(mha.bias_v)
        return new.train(mha.training)

    # Read (never used for computing) by the fast-path checks of nn.TransformerEncoderLayer
    # (``in_proj_bias is None``) and nn.TransformerEncoder (``has_torch_function``, see _NoFusedKernel).
    @property
    def in_proj_weight(self) -> Tensor | None:
        """The packed projection weight ``nn.MultiheadAttention`` would hold (a read-only copy)."""
        if self.kdim != self.embed_dim or self.vdim != self.embed_dim:
            return None  # as nn.MultiheadAttention: separate weights, no packed one
        return torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight]).as_subclass(_NoFusedKernel)

    @property
    def in_proj_bias(self) -> Tensor | None:
        """The packed projection bias ``nn.MultiheadAttention`` would hold (a read-only copy), or None."""
        if self.q_proj.bias is None:
            return None
        return torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias]).as_subclass(_NoFusedKernel)

    def extra_repr(self) -> str:
        return (
            f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, dropout={self.dropout}, "
            f"batch_first={self.batch_first}, add_zero_attn={self.add_zero_attn}"
        )

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """``nn.MultiheadAttention.forward``: same arguments, shapes, masks (bool True = may not attend)
        and results."""
        if query.is_nested or key.is_nested or value.is_nested:
            raise AssertionError("SpelledOutAttention does not support NestedTensor inputs")
        is_batched = F._mha_shape_check(query, key, value, key_padding_mask, attn_mask, self.num_heads)
        # Work batch first: (N, L, E).
        if not is_batched:
            query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        elif not self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        bsz, tgt_len, embed_dim = query.shape
        heads, head_dim = self.num_heads, self.head_dim
        if embed_dim != self.embed_dim:
            raise AssertionError(f"was expecting embedding dimension of {self.embed_dim}, but got {embed_dim}")
        if key.shape[:2] != value.shape[:2]:
            raise AssertionError(f"key's sequence and batch dims {key.shape[:2]} do not match value's")

        # Masks become additive float masks (bool True -> -inf), as in nn.MultiheadAttention.
        key_padding_mask = F._canonical_mask(
            mask=key_padding_mask,
            mask_name="key_padding_mask",
            other_type=F._none_or_dtype(attn_mask),
            other_name="attn_mask",
            target_type=query.dtype,
        )
        if is_causal and attn_mask is None:
            raise RuntimeError(
                "Need attn_mask if specifying the is_causal hint. You may use the Transformer module method "
                "`generate_square_subsequent_mask` to create this mask."
            )
        # torch's hint semantics: SDPA's own causal mask replaces attn_mask unless a padding mask must be
        # merged into it or the weights are wanted; otherwise attn_mask is used and the hint ignored.
        is_causal = is_causal and key_padding_mask is None and not need_weights
        attn_mask = None if is_causal else F._canonical_mask(attn_mask, "attn_mask", None, "", query.dtype, False)
        src_len = key.shape[1]
        if attn_mask is not None:  # -> (1, 1, L, S) or (N, H, L, S)
            if attn_mask.dim() == 2:
                if attn_mask.shape != (tgt_len, src_len):
                    raise RuntimeError(
                        f"The shape of the 2D attn_mask is {attn_mask.shape}, but should be {(tgt_len, src_len)}."
                    )
                attn_mask = attn_mask.view(1, 1, tgt_len, src_len)
            else:
                if attn_mask.shape != (bsz * heads, tgt_len, src_len):
                    raise RuntimeError(
                        f"The shape of the 3D attn_mask is {attn_mask.shape}, "
                        f"but should be {(bsz * heads, tgt_len, src_len)}."
                    )
                attn_mask = attn_mask.view(bsz, heads, tgt_len, src_len)

        q, k, v = self.q_proj(query), self.k_proj(key), self.v_proj(value)
        if self.bias_k is not None and self.bias_v is not None:  # one more key/value, which every query sees
            k = torch.cat([k, self.bias_k.expand(bsz, 1, embed_dim)], dim=1)
            v = torch.cat([v, self.bias_v.expand(bsz, 1, embed_dim)], dim=1)
            attn_mask = None if attn_mask is None else F.pad(attn_mask, (0, 1))
            key_padding_mask = None if key_padding_mask is None else F.pad(key_padding_mask, (0, 1))
        elif self.bias_k is not None or self.bias_v is not None:
            raise AssertionError("bias_k and bias_v must both be set or both be None")
        # (N, S, E) -> (N, H, S, head_dim)
        q, k, v = (t.unflatten(-1, (heads, head_dim)).transpose(1, 2) for t in (q, k, v))
        if self.add_zero_attn:  # one more all-zero key/value
            zeros = torch.zeros(bsz, heads, 1, head_dim, dtype=k.dtype, device=k.device)
            k, v = torch.cat([k, zeros], dim=2), torch.cat([v, zeros], dim=2)
            attn_mask = None if attn_mask is None else F.pad(attn_mask, (0, 1))
            key_padding_mask = None if key_padding_mask is None else F.pad(key_padding_mask, (0, 1))
        src_len = k.shape[2]
        if key_padding_mask is not None:
            if key_padding_mask.shape != (bsz, src_len):
                raise AssertionError(
                    f"Expected key_padding_mask of shape {(bsz, src_len)}, got {key_padding_mask.shape}"
                )
            key_padding_mask = key_padding_mask.view(bsz, 1, 1, src_len)
            attn_mask = key_padding_mask if attn_mask is None else attn_mask + key_padding_mask
        dropout_p = self.dropout if self.training else 0.0

        if need_weights:
            scale = math.sqrt(1.0 / float(head_dim))  # torch's expression, so the same float
            scores = torch.matmul(q, k.transpose(-2, -1)) * scale
            if attn_mask is not None:
                scores = scores + attn_mask
            weights = torch.softmax(scores, dim=-1)
            if dropout_p > 0.0:
                weights = F.dropout(weights, p=dropout_p)
            out = torch.matmul(weights, v)
            if average_attn_weights:
                weights = weights.mean(dim=1)
            if not is_batched:
                weights = weights.squeeze(0)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal)
            weights = None
        out = self.out_proj(out.transpose(1, 2).reshape(bsz, tgt_len, embed_dim))
        if not is_batched:
            out = out.squeeze(0)
        elif not self.batch_first:
            out = out.transpose(0, 1)
        return out, weights


def spell_out_attention_(model: nn.Module) -> collections.Counter:
    """Replace, in place, every submodule of type exactly ``nn.MultiheadAttention`` (a subclass may
    compute differently; the root is never replaced) by :meth:`SpelledOutAttention.from_module`.
    A module shared by several parents stays shared. Returns
    ``Counter({"MultiheadAttention -> SpelledOutAttention": n})``, empty if there was none."""
    swapped = collections.Counter()
    replaced: dict[int, SpelledOutAttention] = {}
    for parent in list(model.modules()):
        for name, child in list(parent._modules.items()):  # named_children() skips a repeated child
            if type(child) is nn.MultiheadAttention:
                if id(child) not in replaced:
                    replaced[id(child)] = SpelledOutAttention.from_module(child)
                    swapped[SWAP_KEY] += 1
                setattr(parent, name, replaced[id(child)])
    return swapped
