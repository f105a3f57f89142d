"""Triton kernel of one training step of the population engine's CNNs: one program per model.

A program runs its model's whole step for the batch the engine chose (``idx``): forward through three
convolutions (conv → [2×2 max-pool] → activation → [dropout]) and two linear layers, the cross-entropy,
then the backward, layer by layer from the top, applying the Adam/SGD update of each layer as soon as its
gradient is complete (after the gradient for the layer below has been taken with the old weights). All
models of a group run in one launch (grid = models).

Data flow: the images are read in place through ``idx``; each layer's pooled pre-activation, output and
pooling argmax go to a per-model scratch area (``scratch``, ``argmax``; a few KB to 140 KB per model,
cache-resident), where the backward later overwrites the pre-activation with its gradient. Stages are
separated by ``tl.debug_barrier()`` (one thread block per program; a no-op in the interpreter).

Convolutions are implicit GEMMs on gathered tiles (``tl.dot``, float32 ``input_precision="ieee"`` unless
TF32 is switched on): forward rows = pooled output positions (b, y, x), one product per pooling offset,
the max taken on the fly; weight gradients = products of the unpooled output gradient with the same
input patches; input gradients = products of the unpooled, flipped output gradient with the weights.
Every ``tl.dot`` operand is padded to ≥ 16 per dimension. Dropout masks come from the same hash as
``randomness.uniform`` keyed by the models' epoch keys (``randomness.model_key``) with the element indexing of
``population.dropout``; activations and their
derivatives are torch's formulas (tanh: Cephes' float32 form, as the interpreter has no libdevice).

Flags are ints (0/1); ``ACT``: 0 tanh, 1 sigmoid, 2 relu, 3 gelu (exact); ``OPT``: 0 Adam, 1 SGD.
"""

from __future__ import annotations

import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction

# ---------------------------------------------------------------------------------------------------------
# Elementwise pieces
# ---------------------------------------------------------------------------------------------------------


@triton.jit
def _fmix(h):
    """MurmurHash3's 32-bit finaliser on uint32 values (randomness._fmix)."""
    h = h ^ (h >> 16)
    h = h * 0x85EBCA6B
    h = h ^ (h >> 13)
    h = h * 0xC2B2AE35
    return h ^ (h >> 16)


@triton.jit
def _dropout_key(key_ptr, step_ptr, MIX: tl.constexpr):
    """Hash state after (key, stream, step) of randomness.random_bits; the int64 key is a model's
    ``randomness.model_key`` (seed in the low 32 bits, lane above; lane 0 hashes as the plain seed);
    ``MIX`` = stream · 0x632BE5AB mod 2³²."""
    key = tl.load(key_ptr)
    h = _fmix(key.to(tl.uint32) ^ 0x9E3779B9)  # the low 32 bits
    lane = (key >> 32).to(tl.uint32)
    h = tl.where(lane == 0, h, _fmix(h + lane * 0x165667B1))
    h = _fmix(h + tl.full((), MIX, tl.uint32))
    return _fmix(h + tl.load(step_ptr).to(tl.uint32))


@triton.jit
def _keep(key, index):
    """randomness.uniform(key, stream, step, index) for int element indices: 24-bit floats in [0, 1)."""
    bits = _fmix(key + index.to(tl.uint32) * 0x27D4EB2F)
    return (bits >> 8).to(tl.float32) * (1.0 / 16777216.0)


@triton.jit
def _dropout(x, key, index, p, DROP: tl.constexpr):
    """Inverted dropout x · keep / (1 − p) of population.dropout (also its backward: same mask)."""
    if DROP:
        x = x * (_keep(key, index) >= p).to(tl.float32) / (1.0 - p)
    return x


@triton.jit
def _sum(x, axis: tl.constexpr):
    """tl.sum by its combine function: Triton's own library functions (tl.sum, tl.zeros, tl.sigmoid, …) are
    jit functions too, and fail in the interpreter when Triton was imported before TRITON_INTERPRET=1 was
    set; the interpreter recognises tl.standard's combine functions and reduces with numpy."""
    return tl.reduce(x, axis, tl.standard._sum_combine)


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(tl.minimum(-x, 88.0)))  # e^88 < float32's largest: no overflow


@triton.jit
def _tanh(x):
    """float32 tanh (Cephes tanhf: odd polynomial below 0.625, 1 − 2/(e^{2|x|} + 1) above)."""
    ax = tl.abs(x)
    z = x * x
    small = ((((-5.70498872745e-3 * z + 2.06390887954e-2) * z - 5.37397155531e-2) * z + 1.33314422036e-1) * z
             - 3.33332819422e-1) * z * x + x
    large = 1.0 - 2.0 / (tl.exp(2.0 * tl.minimum(ax, 15.0)) + 1.0)  # tanh(15) rounds to 1: no overflow
    return tl.where(ax < 0.625, small, tl.where(x < 0.0, -large, large))


@triton.jit
def _act(x, ACT: tl.constexpr):
    if ACT == 0:
        y = _tanh(x)
    elif ACT == 1:
        y = _sigmoid(x)
    elif ACT == 2:
        y = tl.maximum(x, 0.0)
    else:
        y = x * 0.5 * (1.0 + tl.erf(x * 0.7071067811865476))
    return y


@triton.jit
def _act_grad(g, x, ACT: tl.constexpr):
    """Gradient through the activation at pre-activation ``x`` (torch's backward formulas)."""
    if ACT == 0:
        y = _tanh(x)
        r = g * (1.0 - y * y)
    elif ACT == 1:
        y = _sigmoid(x)
        r = g * (1.0 - y) * y
    elif ACT == 2:
        r = tl.where(x > 0.0, g, 0.0)
    else:
        cdf = 0.5 * (1.0 + tl.erf(x * 0.7071067811865476))
        pdf = tl.exp(-0.5 * x * x) * 0.3989422804014327
        r = g * (cdf + x * pdf)
    return r


@triton.jit
def _update(w_ptr, gw_ptr, s1_ptr, s2_ptr, offs, mask, grad, lr, wd, bc2, OPT: tl.constexpr,
            STORE_GRADS: tl.constexpr):
    """population.adam_step / sgd_step on elements ``offs`` (coupled L2). Adam: ``lr`` is lr / (1 − β₁ᵗ),
    ``bc2`` = √(1 − β₂ᵗ), state (exp_avg, exp_avg_sq) in (s1, s2); SGD: momentum buffer in s1."""
    w = tl.load(w_ptr + offs, mask=mask, other=0.0)
    if STORE_GRADS:
        tl.store(gw_ptr + offs, grad, mask=mask)
    grad = grad + wd * w
    if OPT == 0:
        m = tl.load(s1_ptr + offs, mask=mask, other=0.0)
        v = tl.load(s2_ptr + offs, mask=mask, other=0.0)
        m = m + 0.1 * (grad - m)  # torch.lerp(m, grad, 1 − β₁) for weights below 0.5
        v = v * 0.999 + 0.001 * grad * grad
        denom = tl.math.div_rn(tl.math.sqrt_rn(v), bc2) + 1e-8
        w = w - tl.math.div_rn(lr * m, denom)
        tl.store(s1_ptr + offs, m, mask=mask)
        tl.store(s2_ptr + offs, v, mask=mask)
    else:
        buf = tl.load(s1_ptr + offs, mask=mask, other=0.0) * 0.9 + grad
        w = w - lr * buf
        tl.store(s1_ptr + offs, buf, mask=mask)
    tl.store(w_ptr + offs, w, mask=mask)


# ---------------------------------------------------------------------------------------------------------
# Convolution stages (one layer each; sizes constexpr: input CIN × H × H, kernel KS, OC outputs)
# ---------------------------------------------------------------------------------------------------------


@triton.jit
def _patch_rows(r0, R, idx_ptr, FROM_IMAGES: tl.constexpr, CIN: tl.constexpr, H: tl.constexpr,
                HP: tl.constexpr, S: tl.constexpr, BR: tl.constexpr):
    """Rows r0 … r0 + BR − 1 of a pooled output [B, HP, HP] (valid below R): (r, mask, image, offset of the
    first input element of each row's pooling window), the input read through the batch index into the train
    images or from scratch [B, CIN, H, H]."""
    r = r0 + tl.arange(0, BR)
    rm = r < R
    bi = r // (HP * HP)
    image = tl.load(idx_ptr + bi, mask=rm, other=0) if FROM_IMAGES else bi.to(tl.int64)
    return r, rm, bi, image * (CIN * H * H) + ((r // HP) % HP) * (S * H) + (r % HP) * S


@triton.jit
def _patch_columns(k0, KK: tl.constexpr, KS: tl.constexpr, H: tl.constexpr, BK: tl.constexpr):
    """Reduction elements k0 … k0 + BK − 1 = (channel, row, column) of a KS × KS patch (valid below KK):
    (k, mask, offset in an input image)."""
    k = k0 + tl.arange(0, BK)
    return k, k < KK, (k // (KS * KS)) * (H * H) + ((k // KS) % KS) * H + k % KS


@triton.jit
def _conv_forward(src_ptr, idx_ptr, w_ptr, b_ptr, pre_ptr, out_ptr, arg_ptr, key, p, B,
                  FROM_IMAGES: tl.constexpr, CIN: tl.constexpr, H: tl.constexpr, KS: tl.constexpr,
                  OC: tl.constexpr, POOL: tl.constexpr, DROP: tl.constexpr, ACT: tl.constexpr,
                  OCP: tl.constexpr, BK: tl.constexpr, BR: tl.constexpr, PREC: tl.constexpr):
    """conv (+ bias) → [max-pool, first maximum wins as in torch] → activation → [dropout]; stores the pooled
    pre-activation, the output and the pooling argmax (0..3 = row-major offset in the window)."""
    S: tl.constexpr = 1 + POOL  # pooling stride
    HP: tl.constexpr = (H - KS + 1) // S
    KK: tl.constexpr = CIN * KS * KS
    R = B * HP * HP
    oc = tl.arange(0, OCP)
    ocm = oc < OC
    bias = tl.load(b_ptr + oc, mask=ocm, other=0.0)
    for r0 in range(0, R, BR):
        r, rm, bi, window = _patch_rows(r0, R, idx_ptr, FROM_IMAGES, CIN, H, HP, S, BR)
        best = tl.full([BR, OCP], 0.0, tl.float32)
        arg = tl.full([BR, OCP], 0, tl.int32)
        for off in tl.static_range(S * S):
            origin = window + (off // 2) * H + off % 2
            acc = tl.full([BR, OCP], 0.0, tl.float32)
            for k0 in range(0, KK, BK):
                k, km, col = _patch_columns(k0, KK, KS, H, BK)
                a = tl.load(src_ptr + origin[:, None] + col[None, :], mask=rm[:, None] & km[None, :], other=0.0)
                w = tl.load(w_ptr + oc[None, :] * KK + k[:, None], mask=km[:, None] & ocm[None, :], other=0.0)
                acc = tl.dot(a, w, acc, input_precision=PREC)
            z = acc + bias[None, :]
            if off == 0:
                best = z
            else:
                better = (z > best) | (z != z)
                best = tl.where(better, z, best)
                arg = tl.where(better, off, arg)
        e = bi[:, None] * (OC * HP * HP) + oc[None, :] * (HP * HP) + (r % (HP * HP))[:, None]
        em = rm[:, None] & ocm[None, :]
        tl.store(pre_ptr + e, best, mask=em)
        tl.store(out_ptr + e, _dropout(_act(best, ACT), key, e, p, DROP), mask=em)
        if POOL:
            tl.store(arg_ptr + e, arg.to(tl.int8), mask=em)


@triton.jit
def _conv_input_grad(g_ptr, arg_ptr, w_ptr, below_ptr, key, p, B,
                     CIN: tl.constexpr, H: tl.constexpr, KS: tl.constexpr, OC: tl.constexpr, POOL: tl.constexpr,
                     DROP_BELOW: tl.constexpr, ACT: tl.constexpr, CINP: tl.constexpr, BKT: tl.constexpr,
                     BR: tl.constexpr, PREC: tl.constexpr):
    """Gradient for the layer below's pooled pre-activation, written over it at ``below_ptr``: the full
    correlation of the unpooled output gradient with the flipped weights, then back through the layer
    below's dropout and activation. ``g_ptr``: this layer's pooled pre-activation gradient."""
    S: tl.constexpr = 1 + POOL
    HP: tl.constexpr = (H - KS + 1) // S
    KK: tl.constexpr = CIN * KS * KS
    KT: tl.constexpr = OC * KS * KS
    R = B * H * H
    c = tl.arange(0, CINP)
    cm = c < CIN
    for r0 in range(0, R, BR):
        r = r0 + tl.arange(0, BR)
        rm = r < R
        bi = r // (H * H)
        iy = (r // H) % H
        ix = r % H
        acc = tl.full([BR, CINP], 0.0, tl.float32)
        for k0 in range(0, KT, BKT):
            k = k0 + tl.arange(0, BKT)
            km = k < KT
            o = k // (KS * KS)
            kh = (k // KS) % KS
            kw = k % KS
            y = iy[:, None] - kh[None, :]
            x = ix[:, None] - kw[None, :]
            valid = rm[:, None] & km[None, :] & (y >= 0) & (x >= 0) & (y < HP * S) & (x < HP * S)
            y = tl.where(valid, y, 0)
            x = tl.where(valid, x, 0)
            gi = bi[:, None] * (OC * HP * HP) + o[None, :] * (HP * HP) + (y // S) * HP + x // S
            g = tl.load(g_ptr + gi, mask=valid, other=0.0)
            if POOL:
                am = tl.load(arg_ptr + gi, mask=valid, other=0).to(tl.int32)
                g = tl.where(am == (y % 2) * 2 + x % 2, g, 0.0)
            w = tl.load(w_ptr + o[:, None] * KK + c[None, :] * (KS * KS) + (kh * KS + kw)[:, None],
                        mask=km[:, None] & cm[None, :], other=0.0)
            acc = tl.dot(g, w, acc, input_precision=PREC)
        e = bi[:, None] * (CIN * H * H) + c[None, :] * (H * H) + (r % (H * H))[:, None]
        em = rm[:, None] & cm[None, :]
        pre = tl.load(below_ptr + e, mask=em, other=0.0)
        tl.store(below_ptr + e, _act_grad(_dropout(acc, key, e, p, DROP_BELOW), pre, ACT), mask=em)


@triton.jit
def _conv_weight_grad(src_ptr, idx_ptr, g_ptr, arg_ptr, w_ptr, b_ptr, gw_ptr, gb_ptr, s1w, s1b, s2w, s2b,
                      lr, wd, bc2, B,
                      FROM_IMAGES: tl.constexpr, CIN: tl.constexpr, H: tl.constexpr, KS: tl.constexpr,
                      OC: tl.constexpr, POOL: tl.constexpr, OCP: tl.constexpr, BK: tl.constexpr,
                      BR: tl.constexpr, OPT: tl.constexpr, STORE_GRADS: tl.constexpr, PREC: tl.constexpr):
    """Weight and bias gradients of one convolution from its pooled pre-activation gradient and its input,
    each K-chunk of the weight updated as soon as it is complete."""
    S: tl.constexpr = 1 + POOL
    HP: tl.constexpr = (H - KS + 1) // S
    KK: tl.constexpr = CIN * KS * KS
    R = B * HP * HP
    oc = tl.arange(0, OCP)
    ocm = oc < OC
    gb = tl.full([BR, OCP], 0.0, tl.float32)
    for r0 in range(0, R, BR):  # bias: every pooled gradient reaches exactly one conv output
        r = r0 + tl.arange(0, BR)
        rm = r < R
        gi = (r // (HP * HP))[:, None] * (OC * HP * HP) + oc[None, :] * (HP * HP) + (r % (HP * HP))[:, None]
        gb += tl.load(g_ptr + gi, mask=rm[:, None] & ocm[None, :], other=0.0)
    _update(b_ptr, gb_ptr, s1b, s2b, oc, ocm, _sum(gb, 0), lr, wd, bc2, OPT, STORE_GRADS)
    for k0 in range(0, KK, BK):
        k, km, col = _patch_columns(k0, KK, KS, H, BK)
        acc = tl.full([OCP, BK], 0.0, tl.float32)
        for r0 in range(0, R, BR):
            r, rm, bi, window = _patch_rows(r0, R, idx_ptr, FROM_IMAGES, CIN, H, HP, S, BR)
            gi = bi[:, None] * (OC * HP * HP) + oc[None, :] * (HP * HP) + (r % (HP * HP))[:, None]
            gm = rm[:, None] & ocm[None, :]
            g = tl.load(g_ptr + gi, mask=gm, other=0.0)
            am = tl.full([BR, OCP], 0, tl.int32)
            if POOL:
                am = tl.load(arg_ptr + gi, mask=gm, other=0).to(tl.int32)
            for off in tl.static_range(S * S):
                origin = window + (off // 2) * H + off % 2
                a = tl.load(src_ptr + origin[:, None] + col[None, :], mask=rm[:, None] & km[None, :], other=0.0)
                acc = tl.dot(tl.trans(tl.where(am == off, g, 0.0)), a, acc, input_precision=PREC)
        _update(w_ptr, gw_ptr, s1w, s2w, oc[:, None] * KK + k[None, :], ocm[:, None] & km[None, :], acc,
                lr, wd, bc2, OPT, STORE_GRADS)


# ---------------------------------------------------------------------------------------------------------
# Linear layers and loss: forward, loss, backward and update in one stage (a batch fits one tile)
# ---------------------------------------------------------------------------------------------------------


@triton.jit
def _linear_stage(x_ptr, below_ptr, idx_ptr, labels_ptr, w4, b4, gw4, gb4, s1w4, s1b4, s2w4, s2b4,
                  w5, b5, gw5, gb5, s1w5, s1b5, s2w5, s2b5, key3, key4, p, lr, wd, bc2, B,
                  loss_ptr, correct_ptr, logits_ptr,
                  F3: tl.constexpr, F4: tl.constexpr, F5: tl.constexpr, F4P: tl.constexpr, F5P: tl.constexpr,
                  BP: tl.constexpr, BF: tl.constexpr, DROP3: tl.constexpr, DROP4: tl.constexpr,
                  ACT: tl.constexpr, OPT: tl.constexpr, STORE_GRADS: tl.constexpr, PREC: tl.constexpr):
    """fc1 → activation → [dropout] → fc2 → mean cross-entropy; the loss, correct count and logits out;
    backward and update of fc2 and fc1; the gradient for conv3's pooled pre-activation written over it.
    fc1's F3 inputs go in chunks of BF (register pressure: an FMA dot holds its whole K extent per thread)."""
    bb = tl.arange(0, BP)
    bm = bb < B
    j4 = tl.arange(0, F4P)
    j5 = tl.arange(0, F5P)
    m4 = bm[:, None] & (j4 < F4)[None, :]
    m5 = bm[:, None] & (j5 < F5)[None, :]
    e4 = bb[:, None] * F4 + j4[None, :]
    z4 = tl.full([BP, F4P], 0.0, tl.float32)
    for f0 in range(0, F3, BF):
        f3 = f0 + tl.arange(0, BF)
        x = tl.load(x_ptr + bb[:, None] * F3 + f3[None, :], mask=bm[:, None] & (f3 < F3)[None, :], other=0.0)
        wt4 = tl.load(w4 + j4[:, None] * F3 + f3[None, :], mask=(j4 < F4)[:, None] & (f3 < F3)[None, :], other=0.0)
        z4 = tl.dot(x, tl.trans(wt4), z4, input_precision=PREC)
    z4 += tl.load(b4 + j4, mask=j4 < F4, other=0.0)[None, :]
    h = tl.where(m4, _dropout(_act(z4, ACT), key4, e4, p, DROP4), 0.0)
    o5 = j5[:, None] * F4 + j4[None, :]
    k5 = (j5 < F5)[:, None] & (j4 < F4)[None, :]
    wt5 = tl.load(w5 + o5, mask=k5, other=0.0)
    z5 = tl.dot(h, tl.trans(wt5), input_precision=PREC) + tl.load(b5 + j5, mask=j5 < F5, other=0.0)[None, :]
    logits = tl.where((j5 < F5)[None, :], z5, float("-inf"))
    y = tl.load(labels_ptr + tl.load(idx_ptr + bb, mask=bm, other=0), mask=bm, other=0)
    top, pred = tl.reduce((logits, tl.broadcast_to(j5[None, :], (BP, F5P))), 1,
                          tl.standard._argmax_combine_tie_break_left)  # first maximum, as torch.argmax
    ex = tl.exp(logits - top[:, None])
    total = _sum(ex, 1)
    target = j5[None, :] == y[:, None]
    losses = top + tl.log(total) - _sum(tl.where(target, z5, 0.0), 1)
    tl.store(loss_ptr, _sum(tl.where(bm, losses, 0.0), 0) / B)
    tl.store(correct_ptr, _sum((bm & (pred == y)).to(tl.int64), 0))
    tl.store(logits_ptr + bb[:, None] * F5 + j5[None, :], z5, mask=m5)
    dz5 = tl.where(m5, (ex / total[:, None] - target.to(tl.float32)) / B, 0.0)
    dh = tl.dot(dz5, wt5, input_precision=PREC)  # with the old fc2 weights
    _update(w5, gw5, s1w5, s2w5, o5, k5, tl.dot(tl.trans(dz5), h, input_precision=PREC), lr, wd, bc2, OPT,
            STORE_GRADS)
    _update(b5, gb5, s1b5, s2b5, j5, j5 < F5, _sum(dz5, 0), lr, wd, bc2, OPT, STORE_GRADS)
    dz4 = tl.where(m4, _act_grad(_dropout(dh, key4, e4, p, DROP4), z4, ACT), 0.0)
    _update(b4, gb4, s1b4, s2b4, j4, j4 < F4, _sum(dz4, 0), lr, wd, bc2, OPT, STORE_GRADS)
    for f0 in range(0, F3, BF):  # each chunk of fc1's weights: input gradient with the old values, then update
        f3 = f0 + tl.arange(0, BF)
        e3 = bb[:, None] * F3 + f3[None, :]
        m3 = bm[:, None] & (f3 < F3)[None, :]
        o4 = j4[:, None] * F3 + f3[None, :]
        k4 = (j4 < F4)[:, None] & (f3 < F3)[None, :]
        x = tl.load(x_ptr + e3, mask=m3, other=0.0)
        dx = tl.dot(dz4, tl.load(w4 + o4, mask=k4, other=0.0), input_precision=PREC)
        pre = tl.load(below_ptr + e3, mask=m3, other=0.0)
        tl.store(below_ptr + e3, _act_grad(_dropout(dx, key3, e3, p, DROP3), pre, ACT), mask=m3)
        _update(w4, gw4, s1w4, s2w4, o4, k4, tl.dot(tl.trans(dz4), x, input_precision=PREC), lr, wd, bc2, OPT,
                STORE_GRADS)


# ---------------------------------------------------------------------------------------------------------
# The step
# ---------------------------------------------------------------------------------------------------------


@triton.jit
def _tensor(table, i: tl.constexpr, m, numel: tl.constexpr):
    """Model ``m``'s slice of the stacked [M, numel] float32 tensor whose address is ``table[i]``."""
    return tl.load(table + i).to(tl.pointer_type(tl.float32)) + m * numel


# The tensors of a step, by position in ``tensors`` (int64 addresses): the 10 parameters of the 5 layers
# (weight, bias each), then their gradients, first optimizer state (exp_avg / momentum_buffer), second
# (exp_avg_sq). One address table instead of 40 kernel arguments: arguments sit in registers from the
# kernel's entry on, and 40 pointers were a third of the register file of a thread.
GRAD = tl.constexpr(10)
STATE1 = tl.constexpr(20)
STATE2 = tl.constexpr(30)


@triton.jit
def _layer(table, layer: tl.constexpr, m, NW: tl.constexpr, NB: tl.constexpr):
    """(weight, bias, their gradients, first state, second state) of ``layer`` (0-based) for model ``m``."""
    return (_tensor(table, 2 * layer, m, NW), _tensor(table, 2 * layer + 1, m, NB),
            _tensor(table, GRAD + 2 * layer, m, NW), _tensor(table, GRAD + 2 * layer + 1, m, NB),
            _tensor(table, STATE1 + 2 * layer, m, NW), _tensor(table, STATE1 + 2 * layer + 1, m, NB),
            _tensor(table, STATE2 + 2 * layer, m, NW), _tensor(table, STATE2 + 2 * layer + 1, m, NB))


@triton.jit
def train_step_kernel(
        images, labels, idx, keys, drop_p, lrs, wds, bc2_ptr, step_ptr, tensors,
        scratch, argmax, loss, correct, logits, B,
        C0: tl.constexpr, H0: tl.constexpr,
        K1: tl.constexpr, C1: tl.constexpr, P1: tl.constexpr, D1: tl.constexpr, C1P: tl.constexpr,
        K2: tl.constexpr, C2: tl.constexpr, P2: tl.constexpr, D2: tl.constexpr, C2P: tl.constexpr,
        K3: tl.constexpr, C3: tl.constexpr, P3: tl.constexpr, D3: tl.constexpr, C3P: tl.constexpr,
        F4: tl.constexpr, D4: tl.constexpr, F5: tl.constexpr, F4P: tl.constexpr,
        F5P: tl.constexpr, BK1: tl.constexpr, BK2: tl.constexpr, BK3: tl.constexpr, BKT2: tl.constexpr,
        BKT3: tl.constexpr, MIX1: tl.constexpr, MIX2: tl.constexpr, MIX3: tl.constexpr, MIX4: tl.constexpr,
        BMAX: tl.constexpr, BP: tl.constexpr, BR: tl.constexpr, ACT: tl.constexpr, OPT: tl.constexpr,
        STORE_GRADS: tl.constexpr, PREC: tl.constexpr):
    """One training step of model ``program_id(0)``: layer ℓ has kernel Kℓ, Cℓ output channels, pooling Pℓ,
    dropout Dℓ (0/1; ``drop_p`` per model) and Cℓ padded to CℓP ≥ 16; input C0 × H0 × H0; fc1 F4 units
    (dropout D4), F5 classes. Per model: ``idx`` [B], the tensors of ``tensors`` at ``m · numel``,
    scratch [2·ΣBMAX·Cℓ·Hℓ²] float32 and argmax [ΣBMAX·Cℓ·Hℓ²] int8. Adam: ``lrs`` hold lr / (1 − β₁ᵗ)."""
    m = tl.program_id(0).to(tl.int64)
    # spatial sizes: Hℓ = output of layer ℓ after pooling; per-model sizes of scratch regions and weights
    H1: tl.constexpr = (H0 - K1 + 1) // (1 + P1)
    H2: tl.constexpr = (H1 - K2 + 1) // (1 + P2)
    H3: tl.constexpr = (H2 - K3 + 1) // (1 + P3)
    N1: tl.constexpr = BMAX * C1 * H1 * H1
    N2: tl.constexpr = BMAX * C2 * H2 * H2
    N3: tl.constexpr = BMAX * C3 * H3 * H3
    F3: tl.constexpr = C3 * H3 * H3
    # scratch per model: [pre-activation (→ its gradient), output] of layer 1, 2, 3; argmax of layer 1, 2, 3
    sc = scratch + m * (2 * (N1 + N2 + N3))
    am = argmax + m * (N1 + N2 + N3)
    idx = idx + m * B
    p = tl.load(drop_p + m)
    lr = tl.load(lrs + m)
    wd = tl.load(wds + m)
    bc2 = tl.load(bc2_ptr)
    key1 = _dropout_key(keys + m, step_ptr, MIX1) if D1 else 0
    key2 = _dropout_key(keys + m, step_ptr, MIX2) if D2 else 0
    key3 = _dropout_key(keys + m, step_ptr, MIX3) if D3 else 0
    key4 = _dropout_key(keys + m, step_ptr, MIX4) if D4 else 0

    w, b, _, _, _, _, _, _ = _layer(tensors, 0, m, C1 * C0 * K1 * K1, C1)
    _conv_forward(images, idx, w, b, sc, sc + N1, am, key1, p, B, 1, C0, H0, K1, C1, P1, D1, ACT, C1P, BK1, BR, PREC)
    tl.debug_barrier()
    w, b, _, _, _, _, _, _ = _layer(tensors, 1, m, C2 * C1 * K2 * K2, C2)
    _conv_forward(sc + N1, idx, w, b, sc + 2 * N1, sc + 2 * N1 + N2, am + N1, key2, p, B,
                  0, C1, H1, K2, C2, P2, D2, ACT, C2P, BK2, BR, PREC)
    tl.debug_barrier()
    w, b, _, _, _, _, _, _ = _layer(tensors, 2, m, C3 * C2 * K3 * K3, C3)
    _conv_forward(sc + 2 * N1 + N2, idx, w, b, sc + 2 * (N1 + N2), sc + 2 * (N1 + N2) + N3, am + N1 + N2,
                  key3, p, B, 0, C2, H2, K3, C3, P3, D3, ACT, C3P, BK3, BR, PREC)
    tl.debug_barrier()
    w4, b4, gw4, gb4, s1w4, s1b4, s2w4, s2b4 = _layer(tensors, 3, m, F4 * F3, F4)
    w5, b5, gw5, gb5, s1w5, s1b5, s2w5, s2b5 = _layer(tensors, 4, m, F5 * F4, F5)
    _linear_stage(sc + 2 * (N1 + N2) + N3, sc + 2 * (N1 + N2), idx, labels, w4, b4, gw4, gb4, s1w4, s1b4, s2w4,
                  s2b4, w5, b5, gw5, gb5, s1w5, s1b5, s2w5, s2b5, key3, key4, p, lr, wd, bc2, B,
                  loss + m, correct + m, logits + m * (BMAX * F5),
                  F3, F4, F5, F4P, F5P, BP, 16, D3, D4, ACT, OPT, STORE_GRADS, PREC)
    tl.debug_barrier()
    w, b, gw, gb, s1w, s1b, s2w, s2b = _layer(tensors, 2, m, C3 * C2 * K3 * K3, C3)
    _conv_input_grad(sc + 2 * (N1 + N2), am + N1 + N2, w, sc + 2 * N1, key2, p, B,
                     C2, H2, K3, C3, P3, D2, ACT, C2P, BKT3, BR, PREC)
    tl.debug_barrier()
    _conv_weight_grad(sc + 2 * N1 + N2, idx, sc + 2 * (N1 + N2), am + N1 + N2, w, b, gw, gb, s1w, s1b, s2w, s2b,
                      lr, wd, bc2, B, 0, C2, H2, K3, C3, P3, C3P, BK3, BR, OPT, STORE_GRADS, PREC)
    w, b, gw, gb, s1w, s1b, s2w, s2b = _layer(tensors, 1, m, C2 * C1 * K2 * K2, C2)
    _conv_input_grad(sc + 2 * N1, am + N1, w, sc, key1, p, B, C1, H1, K2, C2, P2, D1, ACT, C1P, BKT2, BR, PREC)
    tl.debug_barrier()
    _conv_weight_grad(sc + N1, idx, sc + 2 * N1, am + N1, w, b, gw, gb, s1w, s1b, s2w, s2b,
                      lr, wd, bc2, B, 0, C1, H1, K2, C2, P2, C2P, BK2, BR, OPT, STORE_GRADS, PREC)
    w, b, gw, gb, s1w, s1b, s2w, s2b = _layer(tensors, 0, m, C1 * C0 * K1 * K1, C1)
    _conv_weight_grad(images, idx, sc, am, w, b, gw, gb, s1w, s1b, s2w, s2b,
                      lr, wd, bc2, B, 1, C0, H0, K1, C1, P1, C1P, BK1, BR, OPT, STORE_GRADS, PREC)


INTERPRETED = isinstance(train_step_kernel, InterpretedFunction)  # decided by TRITON_INTERPRET at import
