"""MNIST-1D as an unbounded, index-addressable source: the reference procedure, vectorized in torch.

The `mnist1d` package (Greydanus 2020) builds each sample with numpy, one at a time
(`mnist1d.transform.transform`): a 12-point digit template is padded with zeros, stretched to 72
points, scaled, rolled, its zero region filled with smoothed noise, iid noise added, sheared and
resampled to 40 points. Every one of those steps is linear in the data once the few random scalars
(label, padding, scale, shift, shear) are fixed, so this module precomputes the linear maps once and
runs a whole batch as a handful of tensor ops:

- pad + stretch depend only on (label, padding p) and shift only permutes: a table of all
  (label, p, k) rolled templates, (10 * 25 * 48, 72), plus the structural mask `x != 0` taken
  from the float64 table exactly as the reference computes it;
- `scipy.ndimage.gaussian_filter(sigma=2)` (mode 'reflect', radius 8) is a fixed 72 x 72 matrix;
- the final 72 -> 40 linear resample is a fixed 72 x 40 matrix.

Sample i is a pure function of (cfg.seed, i): all of its randomness is row i % BLOCK of one
`rng.block_draw` block, drawn in a fixed order. `raw` gives the unstandardized signal (what the
reference `transform` returns); `get` standardizes it with fixed global constants.
"""

from __future__ import annotations

import numpy as np
import torch
from mnist1d.data import get_dataset_args, get_templates
from mnist1d.transform import interpolate
from scipy.ndimage import gaussian_filter
from twoworlds.datamodules import rng
from twoworlds.datamodules.sources import DataConfig, Source, register_source

# The reference's default arguments (mnist1d.data.get_dataset_args).
_ARGS = get_dataset_args()
NUM_CLASSES = 10
PAD_LOW, PAD_HIGH = _ARGS.padding  # padding p uniform in [36, 60]
NUM_PADS = PAD_HIGH - PAD_LOW + 1  # 25
LONG_LEN = _ARGS.template_len + PAD_HIGH  # 72: length after the "dilate" resample
MAX_SHIFT = _ARGS.max_translation  # roll k uniform in [0, 48)
FINAL_LEN = _ARGS.final_seq_length  # 40
SCALE_COEFF = _ARGS.scale_coeff  # scale factor 1 + 0.4 (u - 0.5)
CORR_SCALE = _ARGS.corr_noise_scale  # 0.25, before the Gaussian filter
IID_SCALE = _ARGS.iid_noise_scale  # 0.02
SHEAR_SCALE = _ARGS.shear_scale  # shear coefficient 0.75 (u - 0.5)
CORR_SIGMA = 2.0  # gaussian_filter(noise, 2) in mnist1d.transform.corr_noise_like
EPS = 1e-8  # transform(..., eps=1e-8): added to the template before padding

# Global mean and std of the unstandardized 40-point signal (over all samples and positions): the
# constants `make_dataset` computes from its own 5000 samples, here fixed once for every pool. Computed
# offline from this generator: `raw(torch.arange(2**22))` for cfg.seed 0, 1 and 2 (3 x 4.2M samples,
# float64 sums), pooled; the three seeds agree to 3e-5 (mean) and 4e-5 (std). The reference
# `transform` on 4 x 50,000 numpy samples gives mean -0.00602 +- 0.00008, std 0.1546 +- 0.0001.
RAW_MEAN = -0.006059
RAW_STD = 0.154696


def template_table() -> tuple[np.ndarray, np.ndarray]:
    """(10, 25, 72) float64 padded+stretched templates, and their structural mask `x != 0`.

    Computed with the reference's own `interpolate`, so the mask matches the reference bit for bit.
    """
    templates = get_templates()["x"]
    table = np.zeros((NUM_CLASSES, NUM_PADS, LONG_LEN))
    for label in range(NUM_CLASSES):
        for j in range(NUM_PADS):
            padded = np.concatenate([templates[label] + EPS, np.zeros(PAD_LOW + j)])
            table[label, j] = interpolate(padded, LONG_LEN)
    return table, table != 0


def rolled_table(table: np.ndarray) -> np.ndarray:
    """(10, 25, 48, 72): every template rolled right by every k, `x[(j - k) mod 72]`."""
    src = (np.arange(LONG_LEN)[None, :] - np.arange(MAX_SHIFT)[:, None]) % LONG_LEN  # (48, 72)
    return table[:, :, src]


def filter_matrix() -> np.ndarray:
    """(72, 72) G with `noise @ G == gaussian_filter(noise, 2)` for a row vector of noise."""
    return np.stack([gaussian_filter(row, CORR_SIGMA) for row in np.eye(LONG_LEN)])


def resample_matrix() -> np.ndarray:
    """(72, 40) R with `x @ R == interpolate(x, 40)` (linear interpolation is linear in x)."""
    return np.stack([interpolate(row, FINAL_LEN) for row in np.eye(LONG_LEN)])


def draw_block(gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """All randomness of BLOCK samples, in a fixed order (changing it changes every sample)."""
    n = rng.BLOCK
    label = torch.randint(NUM_CLASSES, (n,), generator=gen)
    pad = torch.randint(NUM_PADS, (n,), generator=gen)  # p - 36
    shift = torch.randint(MAX_SHIFT, (n,), generator=gen)  # k
    unif = torch.rand(n, 2, generator=gen, dtype=torch.float64)  # scale u, shear u
    noise = torch.randn(n, 2 * LONG_LEN, generator=gen)  # 72 correlated-noise, 72 iid normals
    return label, pad, shift, unif, noise


@register_source("mnist1d")
class MNIST1DSource(Source):
    """MNIST-1D with the reference's default arguments; pool unbounded, test ids from TEST_OFFSET."""

    def __init__(self, cfg: DataConfig):
        self.seed = cfg.seed
        self.input_shape = (1, FINAL_LEN)
        self.num_classes = NUM_CLASSES
        self.pool_size = None
        self.test_size = cfg.test_size
        table, mask = template_table()
        flat = NUM_CLASSES * NUM_PADS * MAX_SHIFT
        # Index (label * 25 + pad) * 48 + shift picks a rolled template and its rolled mask.
        self.templates = torch.from_numpy(rolled_table(table).reshape(flat, LONG_LEN)).float()
        self.holes = torch.from_numpy(~rolled_table(mask).reshape(flat, LONG_LEN)).float()
        self.filt = torch.from_numpy(filter_matrix() * CORR_SCALE).float()  # scale folded in
        self.resample = torch.from_numpy(resample_matrix()).float()
        ramp = np.linspace(-0.5, 0.5, LONG_LEN)  # the shear's ramp, before resampling
        self.ramp = torch.from_numpy(ramp).float()

    def draws(self, ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Per-sample (label, pad index, shift, uniforms (B, 2) float64, normals (B, 144))."""
        return rng.block_draw(self.seed, ids, rng.Stream.MNIST1D, draw_block)

    def raw(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unstandardized (x (B, 40) float32, y int64): the reference `transform` output."""
        label, pad, shift, unif, noise = self.draws(ids)
        row = (label * NUM_PADS + pad) * MAX_SHIFT + shift
        scale = (1 + SCALE_COEFF * (unif[:, :1] - 0.5)).float()
        shear = (SHEAR_SCALE * (unif[:, 1:] - 0.5)).float()
        # Structural zeros take the smoothed noise; elsewhere the (nonzero) template stays.
        x = self.templates[row] * scale
        x.addcmul_(self.holes[row], noise[:, :LONG_LEN] @ self.filt)
        x.add_(noise[:, LONG_LEN:], alpha=IID_SCALE)
        x.sub_(shear * self.ramp)
        return x @ self.resample, label

    def get(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.raw(ids)
        x = (x - RAW_MEAN) / RAW_STD
        return x.view(len(ids), *self.input_shape), y
