"""RBN, the RAWtoBit network (Jeong & Jung, ECCV-W 2022, §3.3), and its same-shaped relatives.

RAW in, entropy-coded latent, sRGB out::

    x (B,4,H/2,W/2) --[camera input]--> g_a (3x3 convs s2 + GDN) --> y (B,M,H/s,W/s), s = 32 or 16
        y * gain[q] --> hyperprior (h_a, z, h_s) + checkerboard context --> y_hat (rANS-coded)
        y_hat * inv_gain[q] --> g_s (LiteISPNet decoder: deconvs + RCAGs) --> x_hat (B,3,H,W)

One class serves the paper's teachers too, by configuration: the compression teacher decodes back to
packed RAW (`output="raw"`), the ISP teacher encodes sRGB (`input="srgb"`). With `output="isp"` the
decoder goes past the paper: it reconstructs the white-balanced sensor planes, the classical ISP
(rawbit.isp, LibRaw's bilinear pipeline) renders them with the file's own colour matrix, and the
decoder's last layer adds a learned sRGB residual (what AHD and the network see beyond bilinear), so
colour comes from the file's metadata on any camera instead of being re-learned per camera. A per-rate gain vector
on the latent (Cui et al., CVPR 2021, "asymmetric gained" units) lets one model serve every rate point;
with a single rate it is the paper's one-model-per-lambda RBN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from compressai.entropy_models import EntropyBottleneck
from compressai.latent_codecs import (
    CheckerboardLatentCodec,
    GaussianConditionalLatentCodec,
    HyperLatentCodec,
    HyperpriorLatentCodec,
)
from compressai.layers import GDN, CheckerboardMaskedConv2d, conv3x3
from compressai.models import CompressionModel
import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import RCAG, deconv3x3, pad_to_multiple, run_recording
from .camera_input import camera_input
from .config import NetConfig
from .probability import ExactProbabilityPath

# The paper's lambda set for RBN (§4.1), lowest rate first; one model covers all seven.
PAPER_LAMBDAS = (0.0035, 0.0067, 0.013, 0.025, 0.0483, 0.0932, 0.18)
LATENT_GAIN = 40.0


@dataclass(frozen=True)
class RBNConfig(NetConfig):
    """Everything needed to rebuild an RBN; stored in every checkpoint."""

    arch: str = "rbn"
    input: str = "camera"  # "camera" (file WB + matrix + gamma first), "plain" (paper), "srgb" (ISP teacher)
    output: str = "srgb"  # "srgb"; "raw" for the compression teacher; "isp": planes + classical ISP
    enc_channels: int = 256
    latent_channels: int = 192
    hyper_channels: int = 192
    dec_channels: tuple[int, ...] = (256, 256, 128, 64, 32)  # from 1/latent_stride to 1/2 of the sRGB size
    # sRGB pixels per latent position. 32 is the paper's (four strides on the half-size packed RAW);
    # 16 is what sRGB codecs use: four times the latent positions, so a small decoder need not
    # invent a 32x32 block of detail from one vector.
    latent_stride: int = 32
    rcab_per_group: int = 2
    rcag_levels: int = 5  # decoder levels (coarsest first) that get an RCAG; the rest only upsample
    lambdas: tuple[float, ...] = PAPER_LAMBDAS
    context: str = "checkerboard"


@dataclass
class RBNOutput:
    x_hat: Tensor  # (B, 3, H, W) sRGB in [0, 1]-ish, or (B, 4, H/2, W/2) RAW for output="raw"
    likelihoods: dict[str, Tensor]  # "y", "z"
    enc_features: list[Tensor]  # outputs of g_a's convolutions, for attention transfer
    dec_features: list[Tensor]  # outputs of g_s's convolutions and RCAGs

    def __getitem__(self, key: str):
        """out["x_hat"], out["likelihoods"]: compressai's forward() contract (a dict-like result)."""
        return getattr(self, key)


class LatentStreams(NamedTuple):
    """The entropy-coded latent of one image: what a .rbit file carries besides its header."""

    y_anchor: bytes  # first checkerboard pass of y
    y_rest: bytes  # second pass
    z: bytes  # hyper-latent


class RBN(CompressionModel):
    """RAWtoBit network: encoder, context+hyperprior entropy model, LiteISPNet-style decoder.

    A compressai `CompressionModel`: `forward` (training: x_hat and likelihoods), `compress` /
    `decompress` (bits), `update` (CDF tables), `aux_loss`, and `load_state_dict` resizing the CDF
    buffers, so compressai's tooling treats it as any of its models. Every call takes the rate
    point q and, for camera-aware input or the "isp" head, the photo's colour metadata."""

    def __init__(self, config: RBNConfig):
        super().__init__()
        self.config = c = config
        N, M, H = c.enc_channels, c.latent_channels, c.hyper_channels
        in_ch = 3 if c.input == "srgb" else 4
        levels = int(math.log2(c.latent_stride))
        if 2**levels != c.latent_stride or len(c.dec_channels) != levels:
            raise ValueError(
                f"latent_stride {c.latent_stride} needs {levels} decoder levels, got {len(c.dec_channels)}"
            )
        # sRGB input is twice the packed RAW's size: one more stride for the same latent size.
        n_down = levels if c.input == "srgb" else levels - 1
        enc: list[nn.Module] = []
        for i in range(n_down - 1):
            enc += [conv3x3(in_ch if i == 0 else N, N, stride=2), GDN(N)]
        enc.append(conv3x3(N, M, stride=2))
        self.g_a = nn.ModuleList(enc)

        ch = c.dec_channels
        dec: list[nn.Module] = [conv3x3(M, ch[0])]
        if c.rcag_levels > 0:
            dec.append(RCAG(ch[0], c.rcab_per_group))
        for level, (a, b) in enumerate(zip(ch[:-1], ch[1:]), start=1):
            dec += [deconv3x3(a, b), GDN(b, inverse=True)]
            if level < c.rcag_levels:
                dec.append(RCAG(b, c.rcab_per_group))
        if c.output == "srgb":
            dec.append(deconv3x3(ch[-1], 3))  # stands in for LiteISPNet's inverse wavelet transform
        elif c.output == "isp":
            # 4 sensor planes + a 2x2 block of sRGB residual per packed site, at the packed size:
            # no full-resolution convolution, so decoding costs what rbn-lite's last layer costs.
            dec.append(conv3x3(ch[-1], 4 + 12))
        else:
            dec.append(conv3x3(ch[-1], 4))
        # Start at mid-grey rather than black: Adam moves a bias ~lr per step, so from 0 the output
        # level alone takes ~1000 steps to reach a photo's mean, a long detour on a CPU budget.
        nn.init.constant_(dec[-1].bias, {"srgb": 0.5, "isp": 0.4}.get(c.output, 0.1))
        if c.output == "isp":  # the residual starts at zero: the decoder starts as LibRaw LINEAR
            with torch.no_grad():
                dec[-1].weight[4:].zero_()
                dec[-1].bias[4:].zero_()
        self.g_s = nn.ModuleList(dec)

        h_a = nn.Sequential(
            conv3x3(M, H), nn.LeakyReLU(inplace=True),
            conv3x3(H, H, stride=2), nn.LeakyReLU(inplace=True),
            conv3x3(H, H, stride=2),
        )  # fmt: skip
        h_s = nn.Sequential(
            conv3x3(H, H), nn.LeakyReLU(inplace=True),
            deconv3x3(H, H), nn.LeakyReLU(inplace=True),
            conv3x3(H, H * 3 // 2), nn.LeakyReLU(inplace=True),
            deconv3x3(H * 3 // 2, H * 3 // 2), nn.LeakyReLU(inplace=True),
            conv3x3(H * 3 // 2, 2 * M),
        )  # fmt: skip
        self.latent_codec = HyperpriorLatentCodec(
            latent_codec={
                "y": CheckerboardLatentCodec(
                    latent_codec={"y": GaussianConditionalLatentCodec(quantizer="ste")},
                    entropy_parameters=nn.Sequential(
                        nn.Conv2d(4 * M, 10 * M // 3, 1), nn.LeakyReLU(inplace=True),
                        nn.Conv2d(10 * M // 3, 8 * M // 3, 1), nn.LeakyReLU(inplace=True),
                        nn.Conv2d(8 * M // 3, 2 * M, 1),
                    ),  # fmt: skip
                    context_prediction=CheckerboardMaskedConv2d(M, 2 * M, kernel_size=5, padding=2),
                ),
                "hyper": HyperLatentCodec(
                    entropy_bottleneck=EntropyBottleneck(H), h_a=h_a, h_s=h_s, quantizer="ste"
                ),
            }
        )
        # A freshly initialised g_a gives y with std ~0.05: it would round to all zeros and reach
        # g_s as a whisper against its biases, until Adam (~lr per step) had grown it a
        # hundredfold. Scaling g_a's last layer puts y at a few quantisation steps from the start.
        with torch.no_grad():
            self.g_a[-1].weight.mul_(LATENT_GAIN)
            self.g_a[-1].bias.mul_(LATENT_GAIN)
        # Quantisation step 1/gain: sqrt(lambda) spacing is where MSE-optimal steps sit at high rate.
        ref = math.sqrt(min(c.lambdas) * max(c.lambdas))
        log_gain = torch.tensor([0.5 * math.log(lam / ref) for lam in c.lambdas])
        self.log_gain = nn.Parameter(log_gain[:, None].repeat(1, M).clone())
        self.log_inv_gain = nn.Parameter(-log_gain[:, None].repeat(1, M).clone())

    # --- sizes -------------------------------------------------------------------------------------
    @property
    def n_rates(self) -> int:
        return len(self.config.lambdas)

    @property
    def needs_colour(self) -> bool:
        """Whether decoding needs the file's colour matrix (carried in the .rbit header)."""
        return self.config.output == "isp"

    @property
    def input_stride(self) -> int:
        """Input pixels (packed RAW, or sRGB) per latent value."""
        return self.config.latent_stride if self.config.input == "srgb" else self.config.latent_stride // 2

    @property
    def analysis_halo(self) -> int:
        """Latent cells of context that make g_a's latent over a tile of the input that of the whole
        image (up to float rounding): g_a is 3x3 convolutions of stride 2 and pointwise GDNs, so a
        latent value reads inputs within 1 + 2 + ... + input_stride / 2 = input_stride - 1 pixels."""
        return 1

    @property
    def input_multiple(self) -> int:
        """Input height/width must be multiples of this (z is at 1/4 of y)."""
        srgb_multiple = 4 * self.config.latent_stride
        return srgb_multiple if self.config.input == "srgb" else srgb_multiple // 2

    def latent_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) of y for an sRGB image of this size, after padding to the input multiple."""
        s = self.config.latent_stride
        m = 4 * s
        return -(-height // m) * m // s, -(-width // m) * m // s

    # --- the two transforms -----------------------------------------------------------------------
    def analyze(
        self, x: Tensor, wb: Tensor | None = None, cam_to_srgb: Tensor | None = None,
        record: list[Tensor] | None = None,
    ) -> Tensor:  # fmt: skip
        """(B, 4, h, w) packed RAW (or (B, 3, H, W) sRGB) -> (B, M, H/s, W/s) latent y."""
        if self.config.input == "camera":
            if wb is None or cam_to_srgb is None:
                raise ValueError("this model needs the file's white balance and colour matrix")
            x = camera_input(x, wb, cam_to_srgb)
        return run_recording(self.g_a, x, record)

    def synthesize(
        self, y_hat: Tensor, record: list[Tensor] | None = None, *,
        wb: Tensor | None = None, cam_to_srgb: Tensor | None = None,
    ) -> Tensor:  # fmt: skip
        """(B, M, H/s, W/s) dequantised latent -> (B, 3, H, W) sRGB (or packed RAW).

        cam_to_srgb (B, 3, 3) is needed where `needs_colour`; wb is accepted for symmetry with
        `analyze` and unused: the planes come back white-balanced, as LibRaw demosaics them."""
        out = run_recording(self.g_s, y_hat, record)
        if self.config.output != "isp":
            return out
        if cam_to_srgb is None:
            raise ValueError("this model needs the file's colour matrix to decode")
        return self.render_planes(out, cam_to_srgb)

    @staticmethod
    def render_planes(out: Tensor, cam_to_srgb: Tensor) -> Tensor:
        """The "isp" decoder head: (B, 16, h, w) -> (B, 3, 2h, 2w) sRGB on the 8-bit/255 scale."""
        from .. import isp

        # Planes are coded as square roots of the balanced linear values: the shadows, where the
        # sRGB curve is steepest, get finer steps than a linear output would give them.
        balanced = out[:, :4].clamp(0.0, 1.0).square()
        base = isp.render_balanced(balanced, cam_to_srgb)
        return base + F.pixel_shuffle(out[:, 4:], 2)

    def gain(self, q: Tensor | int, inverse: bool = False) -> Tensor:
        """(B, M, 1, 1) per-channel gain of rate point(s) q (0-based): y * gain is quantised with
        step 1; the inverse gain takes y_hat back to the decoder's scale."""
        table = self.log_inv_gain if inverse else self.log_gain
        return table[q].exp().reshape(-1, self.config.latent_channels, 1, 1)

    # --- training ---------------------------------------------------------------------------------
    def forward(
        self, x: Tensor, q: Tensor | int, wb: Tensor | None = None,
        cam_to_srgb: Tensor | None = None, record: bool = False,
    ) -> RBNOutput:  # fmt: skip
        """x (B, 4, h, w) with h, w multiples of `input_multiple`; q: rate index per sample."""
        enc_f: list[Tensor] | None = [] if record else None
        dec_f: list[Tensor] | None = [] if record else None
        y = self.analyze(x, wb, cam_to_srgb, enc_f)
        out = self.latent_codec(y * self.gain(q))
        x_hat = self.synthesize(out["y_hat"] * self.gain(q, inverse=True), dec_f, wb=wb, cam_to_srgb=cam_to_srgb)
        return RBNOutput(x_hat, out["likelihoods"], enc_f or [], dec_f or [])

    # --- coding (the probability path runs wherever the latent codec lives: keep it on CPU) -------
    # exact=True: the integer probability path (nets/probability.py) that format-3 files are coded
    # with; exact=False: compressai's float32 path, which files of formats 1 and 2 were written with.
    def compress_latent(self, y: Tensor, q: int, exact: bool = True, y_hat: bool = False):
        """Quantise and rANS-code y (one image): its streams and y's (h, w), and with `y_hat` (exact
        path only) the latent `decompress_latent` will give back, which spares an encoder that
        needs the decoded photo a second pass through the entropy model."""
        if exact:
            strings, hat = ExactProbabilityPath(self.latent_codec).compress(y * self.gain(q))
            out = LatentStreams(*strings), tuple(y.shape[-2:])
            return (*out, hat * self.gain(q, inverse=True)) if y_hat else out
        if y_hat:
            raise ValueError("y_hat is given by the exact probability path only")
        out = self.latent_codec.compress(y * self.gain(q))
        return LatentStreams(*(s[0] for s in out["strings"])), tuple(y.shape[-2:])

    def decompress_latent(self, streams: LatentStreams, y_size: tuple[int, int], q: int, exact: bool = True) -> Tensor:
        """Inverse of compress_latent: the dequantised latent the decoder's g_s consumes."""
        streams = LatentStreams(*streams)
        if exact:
            y_hat = ExactProbabilityPath(self.latent_codec).decompress(list(streams), y_size)
            return y_hat * self.gain(q, inverse=True)
        h, w = y_size
        shape = {"y": (self.config.latent_channels, h, w), "hyper": (h // 4, w // 4)}
        out = self.latent_codec.decompress([[streams.y_anchor], [streams.y_rest], [streams.z]], shape)
        return out["y_hat"] * self.gain(q, inverse=True)

    @torch.inference_mode()
    def compress(self, x: Tensor, q: int, wb: Tensor | None = None, cam_to_srgb: Tensor | None = None) -> dict:
        """compressai's contract: one padded image (1, C, h, w) -> {"strings", "shape"}."""
        streams, shape = self.compress_latent(self.analyze(x, wb, cam_to_srgb), q)
        return {"strings": [[s] for s in streams], "shape": shape}

    @torch.inference_mode()
    def decompress(
        self, strings: list[list[bytes]], shape: tuple[int, int], q: int, wb: Tensor | None = None,
        cam_to_srgb: Tensor | None = None,
    ) -> dict:  # fmt: skip
        """compressai's contract: {"x_hat"} from compress()'s strings and shape."""
        y_hat = self.decompress_latent(LatentStreams(*(s[0] for s in strings)), shape, q)
        return {"x_hat": self.synthesize(y_hat, wb=wb, cam_to_srgb=cam_to_srgb)}

    def pad(self, x: Tensor) -> Tensor:
        return pad_to_multiple(x, self.input_multiple)
