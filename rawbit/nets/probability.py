"""The probability path in exact integer arithmetic: the same CDF indexes on any machine.

Hyper-synthesis (h_s), the checkerboard context model and the entropy parameters decide, for every
latent symbol, which CDF table rANS codes it with and the mean it is coded around. Encoder and
decoder must compute them identically, or one flipped table index corrupts the rest of the stream.
In float32 they cannot be trusted to: a convolution's sum is rounded after every addition, and the
order of additions differs between instruction sets (AVX2 / AVX-512 / NEON), libraries (oneDNN,
MKL, cuDNN), thread counts and algorithms (Winograd, FFT). CompressAI users lose files this way
(InterDigitalInc/CompressAI #279, #309, #340).

Here every tensor of the path holds integers, and every sum of integers is exact whatever its order:
 - activations are integers in units of 2**-ACT_FRAC, clamped to |a| <= ACT_LIMIT;
 - each layer's weights are rounded to integers in units of 2**-shift, its bias to units of
   2**-(shift + ACT_FRAC), with `shift` the largest (<= MAX_SHIFT) for which
   sum|W| * ACT_LIMIT + |B| < 2**53 holds for every output: every partial sum of the convolution is
   then an integer a float64 holds exactly, so float64 convolution returns the exact integer
   result in any order, with or without FMA, threaded or not (a proof, not a measurement; the
   tests compare it with an int64 computation all the same);
 - after each layer the sum is scaled back by 2**-shift (exact) and rounded to the activation grid
   (round half to even, correctly rounded everywhere), the LeakyReLU slope is one IEEE multiply
   then the same rounding: both are deterministic on any IEEE-754 machine;
 - the scales are compared with compressai's scale table in float64; the means are grid values, so
   y_hat = symbol + mean is exact, and the context model's input with it.
Weights are quantised from the stored float32 tensors by the same deterministic rules, so a model
file defines the integer path completely. The float path the network trains with differs from it by
rounding at 2**-16 (rate effects far below 0.1 %); the synthesis transform, which only turns the
decoded latent into pixels, stays float32 (it can differ in the last bits between machines, never
in which bits are decoded).
"""

from __future__ import annotations

import contextlib
import functools
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ModelError

ACT_FRAC = 16  # activations are integers times 2**-16
ACT_LIMIT = 2.0**30  # |integer activation|, i.e. |value| <= 2**14
MAX_SHIFT = 24  # weights at most 2**-24 fine: far below what a float32 network resolves
_EXACT = 2.0**53  # float64 holds every integer below this exactly
# Latent rows per band of the context convolution (half as many rows of each anchor phase): bounds
# its im2col buffer whatever the photo's size; the sums, exact, do not depend on it.
BAND_ROWS = 32


class FixedConv(nn.Module):
    """A Conv2d or ConvTranspose2d with integer weights, on integer activations (see above)."""

    def __init__(self, layer: nn.Conv2d | nn.ConvTranspose2d, mask: Tensor | None = None):
        super().__init__()
        self.transposed = isinstance(layer, nn.ConvTranspose2d)
        self.stride, self.padding = layer.stride, layer.padding
        self.output_padding = getattr(layer, "output_padding", (0, 0))
        w = layer.weight.detach().to(torch.float64)
        if mask is not None:
            w = w * mask.to(torch.float64)
        b = layer.bias.detach().to(torch.float64) if layer.bias is not None else torch.zeros(w.shape[1 if self.transposed else 0], dtype=torch.float64)
        out_axis = 1 if self.transposed else 0
        dims = [d for d in range(w.dim()) if d != out_axis]
        for shift in range(MAX_SHIFT, -1, -1):
            weight = torch.round(w * 2.0**shift)
            bias = torch.round(b * 2.0 ** (shift + ACT_FRAC))
            bound = weight.abs().sum(dim=dims) * ACT_LIMIT + bias.abs()
            if float(bound.max()) < _EXACT:
                break
        else:
            raise ModelError("this model's probability path has weights too large for exact decoding")
        self.shift = shift
        self.register_buffer("weight", weight, persistent=False)
        self.register_buffer("bias", bias, persistent=False)

    def forward(self, a: Tensor) -> Tensor:
        acc = self.accumulate_int64(a) if _KERNEL == "int64" else self.accumulate(a)
        return acc.mul_(2.0**-self.shift).round_()  # in place: these tensors are large, float64

    def accumulate(self, a: Tensor) -> Tensor:
        """The layer's integer sums, in float64 (exact: see the module's note). A stride-1 layer wider
        than 1x1 runs over bands of rows: a float64 convolution unfolds its whole input first (h_s's
        last layer: ~0.5 GB on a 12 MP latent), and exact sums do not depend on how the rows are split."""
        if self.transposed:
            return F.conv_transpose2d(a, self.weight, self.bias, self.stride, self.padding, self.output_padding)
        halo = self.weight.shape[-2] // 2
        if halo and self.stride == (1, 1) and self.padding[0] == halo and a.shape[-2] > BAND_ROWS:
            conv = functools.partial(F.conv2d, weight=self.weight, bias=self.bias, padding=(0, self.padding[1]))
            return _in_row_bands(a, conv, halo, BAND_ROWS)
        return F.conv2d(a, self.weight, self.bias, self.stride, self.padding)

    def accumulate_int64(self, a: Tensor) -> Tensor:
        """The same sums by a different kernel: int64 arithmetic (im2col + integer matmul), the
        reference the float64 path is checked against (tests, benchmarks/determinism.py)."""
        weight, stride, padding = self.weight, self.stride, self.padding
        if self.transposed:  # = a stride-1 convolution of the zero-stuffed input, kernel flipped
            n, c, h, w = a.shape
            kh, kw = weight.shape[-2:]
            up = a.new_zeros(n, c, (h - 1) * stride[0] + 1, (w - 1) * stride[1] + 1)
            up[..., :: stride[0], :: stride[1]] = a
            top, left = kh - 1 - padding[0], kw - 1 - padding[1]
            a = F.pad(up, (left, left + self.output_padding[1], top, top + self.output_padding[0]))
            weight, stride, padding = weight.flip(-1, -2).transpose(0, 1), (1, 1), (0, 0)
        return conv2d_int64(a, weight, self.bias, stride, padding)


def conv2d_int64(a: Tensor, weight: Tensor, bias: Tensor, stride=(1, 1), padding=(0, 0)) -> Tensor:
    """F.conv2d of integer-valued float64 tensors, computed in int64 (im2col + integer matmul)."""
    n, _, h, w = a.shape
    kh, kw = weight.shape[-2:]
    cols = F.unfold(a, (kh, kw), padding=padding, stride=stride).to(torch.int64)  # a copy: exact
    acc = weight.reshape(weight.shape[0], -1).to(torch.int64) @ cols + bias.to(torch.int64)[:, None]
    oh = (h + 2 * padding[0] - kh) // stride[0] + 1
    ow = (w + 2 * padding[1] - kw) // stride[1] + 1
    return acc.reshape(n, -1, oh, ow).to(torch.float64)


def _conv2d_sum(a: Tensor, weight: Tensor, bias: Tensor, padding=(0, 0)) -> Tensor:
    return conv2d_int64(a, weight, bias, (1, 1), padding) if _KERNEL == "int64" else F.conv2d(a, weight, bias, 1, padding)


_KERNEL = "float64"
_TRACE: list[tuple[Tensor, Tensor]] | None = None


@contextlib.contextmanager
def kernel(name: str) -> Iterator[None]:
    """Compute every fixed-point layer with "float64" (the default) or the "int64" reference."""
    global _KERNEL
    before, _KERNEL = _KERNEL, name
    try:
        yield
    finally:
        _KERNEL = before


class LeakyReLUGrid(nn.Module):
    def __init__(self, slope: float):
        super().__init__()
        self.slope = slope

    def forward(self, a: Tensor) -> Tensor:
        # max(a, 0) + round(min(a, 0) * slope), in place on the layer's own output
        negative = a.clamp(max=0).mul_(self.slope).round_()
        return a.clamp_(min=0).add_(negative)


class Clamp(nn.Module):
    def forward(self, a: Tensor) -> Tensor:
        return a.clamp_(-ACT_LIMIT, ACT_LIMIT)  # in place: it follows a FixedConv's fresh output


def fixed_sequential(seq: nn.Sequential) -> nn.Sequential:
    """The integer twin of a Sequential of convolutions and LeakyReLUs."""
    layers: list[nn.Module] = []
    for m in seq:
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            layers += [FixedConv(m), Clamp()]
        elif isinstance(m, nn.LeakyReLU):
            layers.append(LeakyReLUGrid(m.negative_slope))
        else:
            raise ModelError(f"no exact probability path for a {type(m).__name__} layer")
    return nn.Sequential(*layers)


def to_grid(x: Tensor) -> Tensor:
    """Real values -> integer activations (float64)."""
    return torch.round(x.to(torch.float64) * 2.0**ACT_FRAC).clamp(-ACT_LIMIT, ACT_LIMIT)


def from_grid(a: Tensor) -> Tensor:
    return a * 2.0**-ACT_FRAC


@contextlib.contextmanager
def tracing() -> Iterator[list[tuple[Tensor, Tensor]]]:
    """Collect the (CDF indexes, means on the grid) of every checkerboard pass coded inside the
    block, encoder's and decoder's alike, in order: what determinism checks compare."""
    global _TRACE
    before, _TRACE = _TRACE, []
    try:
        yield _TRACE
    finally:
        _TRACE = before


class ExactProbabilityPath(nn.Module):
    """Codes a latent with a hyperprior + checkerboard latent codec (compressai's
    HyperpriorLatentCodec over a CheckerboardLatentCodec, as RBN has), computing the probability
    path in integers. Streams: [y anchors, y non-anchors, z], as compressai's own compress()."""

    def __init__(self, latent_codec: nn.Module):
        super().__init__()
        self.hyper = latent_codec["hyper"]
        self.checkerboard = cb = latent_codec["y"]
        self.gaussian = cb["y"].gaussian_conditional
        ctx = cb.context_prediction
        self.context = FixedConv(ctx, mask=ctx.mask)
        if cb.anchor_parity != "even" or ctx.weight.shape[-2:] != (5, 5):
            raise ModelError("no exact probability path for this context model")
        self.context_kernels = _context_kernels(self.context.weight)
        self.h_s = fixed_sequential(self.hyper.h_s)
        self.entropy_parameters = fixed_sequential(cb.entropy_parameters)
        self.scale_table = self.gaussian.scale_table.to(torch.float64)

    @torch.inference_mode()
    def compress(self, y: Tensor) -> tuple[list[bytes], Tensor]:
        """[y anchors, y non-anchors, z] and the dequantised latent the decoder will rebuild from
        them (float32, as `decompress` returns it): the same integer arithmetic on both sides."""
        hyper = self.hyper
        z = hyper.h_a(y)
        z_strings = hyper.entropy_bottleneck.compress(z)
        params = self._hyper_synthesis(z_strings, tuple(z.shape[-2:]))
        halves = self.checkerboard.unembed(y.to(torch.float64))
        strings: list[bytes] = []

        def code(i: int, indexes: Tensor, means: Tensor) -> Tensor:
            symbols = torch.round(halves[i] - means)  # compressai's quantize(..., "symbols", means)
            strings.append(self._encode(symbols, indexes))
            return symbols + means  # what the decoder will rebuild

        y_hat = from_grid(self._checkerboard(params, code)).to(torch.float32)
        return [strings[0], strings[1], z_strings[0]], y_hat

    @torch.inference_mode()
    def decompress(self, strings: list[bytes], y_size: tuple[int, int]) -> Tensor:
        """The dequantised latent y_hat (float32) from [y anchors, y non-anchors, z]."""
        y_anchor, y_rest, z = strings
        h, w = y_size
        params = self._hyper_synthesis([z], (h // 4, w // 4))
        streams = [y_anchor, y_rest]

        def code(i: int, indexes: Tensor, means: Tensor) -> Tensor:
            return self._decode(streams[i], indexes) + means  # compressai's dequantize, in float64

        return from_grid(self._checkerboard(params, code)).to(torch.float32)

    def _encode(self, symbols: Tensor, indexes: Tensor) -> bytes:
        """The stream GaussianConditional.compress writes for one image's symbols, given to its coder
        as arrays: inside rans.guarded_rans (as files are coded) the guard's bound reads them as they
        are, where converting compressai's lists of millions of Python ints back cost it more than
        the coding did."""
        flat = symbols.reshape(-1).to(torch.int32).numpy(), indexes.reshape(-1).to(torch.int32).numpy()
        return self.gaussian.entropy_coder.encode_with_indexes(*flat, *self._tables())

    def _decode(self, stream: bytes, indexes: Tensor) -> Tensor:
        """The symbols (float64) of one image's stream, as GaussianConditional.decompress decodes
        them, its indexes given to the coder as an array (see _encode)."""
        flat = indexes.reshape(-1).to(torch.int32).numpy()
        values = self.gaussian.entropy_coder.decode_with_indexes(stream, flat, *self._tables())
        return torch.from_numpy(np.asarray(values, dtype=np.int64)).reshape(indexes.shape).to(torch.float64)

    def _tables(self) -> tuple[list, list, list]:
        g = self.gaussian
        g._check_cdf_size(), g._check_cdf_length(), g._check_offsets_size()  # compressai's own checks
        return g._quantized_cdf.tolist(), g._cdf_length.reshape(-1).int().tolist(), g._offset.reshape(-1).int().tolist()

    def _hyper_synthesis(self, z_strings: list[bytes], z_size: tuple[int, int]) -> Tensor:
        # symbols + medians, one IEEE addition: the same on every machine.
        z_hat = self.hyper.entropy_bottleneck.decompress(z_strings, z_size)
        return self.h_s(to_grid(z_hat))

    def _checkerboard(self, params: Tensor, code) -> Tensor:
        """Both passes; `code(i, indexes, means)` codes half i and returns its y_hat (float64 reals).
        Returns y_hat on the integer grid."""
        cb = self.checkerboard
        side = cb.unembed(params)  # (2, n, 2M, h, w/2)
        n, _, h, half_w = side.shape[1:]
        m = side.shape[2] // 2
        y_hat = torch.zeros(2, n, m, h, half_w, dtype=torch.float64)
        for i in range(2):
            if i == 0:
                ctx = torch.zeros(n, 2 * m, h, half_w, dtype=torch.float64)
            else:
                ctx = self._context(y_hat[0])
            p = self.entropy_parameters(torch.cat([ctx, side[i]], dim=1))
            scales, means = from_grid(p).chunk(2, 1)
            # compressai's build_indexes: the number of table entries (but the last) below the scale
            indexes = torch.searchsorted(self.scale_table[:-1].contiguous(), scales.contiguous()).to(torch.int32)
            if _TRACE is not None:
                _TRACE.append((indexes, p[:, m:]))
            y_hat[i] = to_grid(code(i, indexes, means))
        return cb.embed(y_hat)

    def _context(self, anchors: Tensor) -> Tensor:
        """The context model at the non-anchor positions, from the anchors, both in compressai's
        unembedded layout (n, C, h, w/2). The 5x5 checkerboard-masked convolution is computed as
        two 3x3 convolutions over the anchors' two phases stacked as channels, one per phase of
        the output, which touch only the taps and positions the mask keeps: ~1/3 of the dense
        convolution's work, with the same integer sums (exact: regrouping changes nothing)."""
        n, _, h, half_w = anchors.shape
        phases = torch.cat([anchors[..., 0::2, :], anchors[..., 1::2, :]], dim=1)  # rows of phase (0,0), (1,1)
        out = anchors.new_empty(n, self.context.weight.shape[0], h, half_w)
        for rows, kernel in ((slice(0, None, 2), self.context_kernels[0]), (slice(1, None, 2), self.context_kernels[1])):
            conv = functools.partial(_conv2d_sum, weight=kernel, bias=self.context.bias, padding=(0, 1))
            out[..., rows, :] = _in_row_bands(phases, conv, 1, BAND_ROWS // 2)
        return out.mul_(2.0**-self.context.shift).round_().clamp_(-ACT_LIMIT, ACT_LIMIT)


def _in_row_bands(x: Tensor, conv: Callable[[Tensor], Tensor], halo: int, rows: int) -> Tensor:
    """A stride-1 convolution whose rows `conv` does not pad, over bands of `rows` rows, each with
    `halo` rows of context (zeros beyond the edges): what `conv` of the zero-padded whole gives."""
    h = x.shape[-2]
    out = []
    for a in range(0, h, rows):
        b = min(a + rows, h)
        a0, b0 = max(a - halo, 0), min(b + halo, h)
        out.append(conv(F.pad(x[..., a0:b0, :], (0, 0, halo - (a - a0), halo - (b0 - b)))))
    return torch.cat(out, dim=-2)


def _context_kernels(weight: Tensor) -> tuple[Tensor, Tensor]:
    """The checkerboard-masked 5x5 kernel (out, M, 5, 5) regrouped for `_context`: for each output
    phase (rows even / cols odd, then rows odd / cols even), a (out, 2M, 3, 3) kernel over the
    anchor phases (0,0) and (1,1) stacked as channels. Tap (dy, dx) of output phase (a, b) reads
    input row 2i + a + dy - 2: phase (a + dy) % 2, offset (a + dy - 2) // 2 within the phase."""
    c_out, m = weight.shape[:2]
    kernels = []
    for a, b in ((0, 1), (1, 0)):
        k = weight.new_zeros(c_out, 2 * m, 3, 3)
        for dy in range(5):
            for dx in range(5):
                u, v = a + dy - 2, b + dx - 2
                if u % 2 != v % 2:  # a non-anchor input: the mask has zeroed these taps
                    if weight[:, :, dy, dx].any():
                        raise ModelError("the context model's mask is not the checkerboard this path assumes")
                    continue
                phase = u % 2
                k[:, phase * m : (phase + 1) * m, u // 2 + 1, v // 2 + 1] = weight[:, :, dy, dx]
        kernels.append(k)
    return kernels[0], kernels[1]


# --- formats 1-2: compressai's float32 path -------------------------------------------------------

# Latent rows per band of the legacy probability path (see below). Fixed: the bands, not the thread
# count, decide how each float32 convolution is computed, so both ends compute the same scales.
LEGACY_BAND_ROWS = 16


@contextlib.contextmanager
def float32_path_in_bands(model: nn.Module) -> Iterator[None]:
    """How files of formats 1-2 were coded, for decoding them: compressai's float32 probability path
    with single-threaded ops, the context model and entropy parameters run over fixed bands of
    latent rows in parallel threads, as the encoders of those formats ran them. This machine then
    decodes them as it encoded them; other machines may not (see the module's note)."""
    from ..device import one_thread_per_op

    codec = model.latent_codec["y"]
    with one_thread_per_op() as n_threads, contextlib.ExitStack() as stack:
        pool = None
        if n_threads > 1:
            from concurrent.futures import ThreadPoolExecutor

            pool = stack.enter_context(ThreadPoolExecutor(n_threads))
        # compressai's masked conv re-masks its weight tensor on every call; threads racing on that
        # swap would read freed memory. Mask once here and run the plain convolution.
        ctx = codec.context_prediction
        ctx.weight.data.mul_(ctx.mask)
        plain_ctx = functools.partial(torch.nn.Conv2d.forward, ctx)
        # (module, its forward, halo rows its output needs on each side): the 5x5 context conv, 2.
        for module, forward, halo in ((ctx, plain_ctx, 2), (codec.entropy_parameters, codec.entropy_parameters.forward, 0)):  # fmt: skip
            module.forward = functools.partial(_in_bands, forward, halo, pool)
            stack.callback(delattr, module, "forward")  # back to the class's forward
        yield


def _in_bands(forward, halo: int, pool, x: Tensor) -> Tensor:
    h = x.shape[-2]

    @torch.inference_mode()  # grad mode is per thread: the pool's threads need it too
    def band(a: int) -> Tensor:
        b = min(a + LEGACY_BAND_ROWS, h)
        a0, b0 = max(a - halo, 0), min(b + halo, h)
        return forward(x[..., a0:b0, :])[..., a - a0 : b - a0, :]

    starts = range(0, h, LEGACY_BAND_ROWS)
    return torch.cat(list(pool.map(band, starts)) if pool else [band(a) for a in starts], dim=-2)
