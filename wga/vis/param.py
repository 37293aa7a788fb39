"""Image parameterisations: the variables that are optimised, and their mapping to RGB in [0, 1].

Optimising in a different basis than pixels changes which images gradient ascent finds (Olah et
al., "Feature Visualization", Distill 2017). The Fourier basis with a 1/f scaling whitens the
spectrum of natural images, so all frequencies are learnt at a similar rate; colour
decorrelation does the same for the three colour channels. Both follow Lucid's
``lucid/optvis/param`` (facts in ``shared/notes/featurevis.md``); the code is our own.

Every parameterisation is batched: element ``i`` of the batch is an independent image, created
from its own seed, so an image never depends on which other images share its batch.

:meth:`ImageParam.to_rgb` is written on ``keras.ops``, so it runs (and is differentiated) on
TensorFlow, JAX and PyTorch alike; the 2-D inverse real FFT is composed from the 1-D transforms
Keras offers. The octave helpers (:func:`resize_params`) run on NumPy between octaves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

ParamKind = Literal["fourier", "pixel"]

# Lucid, lucid/optvis/param/color.py: square root of the ImageNet RGB covariance (via SVD).
IMAGENET_COLOR_CORRELATION_SVD_SQRT = np.array(
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype="float32"
)
FOURIER_INIT_STD = 0.01  # Lucid, lucid/optvis/param/spatial.py: spectrum initialised N(0, 0.01)
FOURIER_IMAGE_DIVISOR = 4.0  # Lucid, spatial.py: image = irfft2d(scaled spectrum) / 4
PIXEL_INIT_STD = 0.01  # Lucid's naive(); the 2018 original also started from N(0, 0.01) noise


def normalized_color_matrix(correlation: np.ndarray | None) -> np.ndarray:
    """The decorrelation matrix divided by its largest column norm (Lucid's normalisation).

    ``correlation`` is a 3×3 square root of an RGB covariance (e.g. a fine-tuned model's
    ``LoadedModel.color_correlation``); ``None`` gives the ImageNet matrix.
    """
    matrix = IMAGENET_COLOR_CORRELATION_SVD_SQRT if correlation is None else correlation
    matrix = np.asarray(matrix, dtype="float32").reshape(3, 3)
    norm = float(np.max(np.linalg.norm(matrix, axis=0)))
    if not np.isfinite(norm) or norm <= 0:
        raise ValueError("colour correlation matrix must be finite and non-zero")
    return (matrix / norm).astype("float32")


def rfft2d_freqs(height: int, width: int) -> np.ndarray:
    """|frequency| (cycles per pixel) of every bin of a real 2-D FFT of a height×width image."""
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    return np.sqrt(fx * fx + fy * fy)


def fourier_scale(size: int, decay: float) -> np.ndarray:
    """Lucid's 1/f spectrum scaling for a square image: ``1/max(f, 1/size)**decay * size``."""
    freqs = rfft2d_freqs(size, size)
    scale = 1.0 / np.maximum(freqs, 1.0 / size) ** decay
    return (scale * size).astype("float32")  # sqrt(w * h) for w = h = size


@dataclass(frozen=True)
class ImageParam:
    """How ``size``×``size`` RGB images are made from optimisable parameters.

    ``kind``: ``fourier`` (a 1/f-scaled spectrum, shape ``(B, 3, size, size//2+1, 2)`` as real and
    imaginary parts) or ``pixel`` (``(B, size, size, 3)``). ``decorrelate`` mixes the three
    channels with ``color_matrix``; ``output`` ``sigmoid`` squashes into [0, 1] (Lucid), ``affine``
    maps [-1, 1] linearly to [0, 1] without bounds (the 2018 original worked in model-input space
    and stretched the result at the end).
    """

    kind: ParamKind
    size: int
    decorrelate: bool = True
    output: Literal["sigmoid", "affine"] = "sigmoid"
    decay: float = 1.0  # Lucid 1.0; Xplique 0.85; Horama 1.5
    color_matrix: tuple[tuple[float, ...], ...] | None = None  # None → ImageNet

    def shape(self, batch: int) -> tuple[int, ...]:
        if self.kind == "fourier":
            return (batch, 3, self.size, self.size // 2 + 1, 2)
        return (batch, self.size, self.size, 3)

    def matrix(self) -> np.ndarray:
        return normalized_color_matrix(
            None if self.color_matrix is None else np.asarray(self.color_matrix)
        )

    def init(self, seeds: np.ndarray, salt: int = 0) -> np.ndarray:
        """Initial parameters, element ``i`` drawn from ``seeds[i]`` alone (NumPy, float32)."""
        std = FOURIER_INIT_STD if self.kind == "fourier" else PIXEL_INIT_STD
        element_shape = self.shape(1)[1:]
        out = np.empty((len(seeds), *element_shape), dtype="float32")
        for i, seed in enumerate(seeds):
            rng = np.random.default_rng([int(seed), int(salt), self.size])
            out[i] = rng.normal(0.0, std, size=element_shape)
        return out

    def to_rgb(self, params: Any) -> Any:
        """Parameters → images ``(B, size, size, 3)`` in [0, 1] (``affine``: unbounded)."""
        from keras import ops

        if self.kind == "fourier":
            scale = ops.convert_to_tensor(fourier_scale(self.size, self.decay))
            image = irfft2d(params[..., 0] * scale, params[..., 1] * scale, self.size)
            image = ops.transpose(image, (0, 2, 3, 1)) / FOURIER_IMAGE_DIVISOR
        else:
            image = params
        if self.decorrelate:
            image = ops.matmul(image, ops.convert_to_tensor(self.matrix().T))
        if self.output == "sigmoid":
            return ops.sigmoid(image)
        return (image + 1.0) * 0.5


def irfft2d(real: Any, imag: Any, size: int) -> Any:
    """The inverse real 2-D FFT of a ``(…, size, size // 2 + 1)`` spectrum (as NumPy's
    ``irfft2`` with ``s=(size, size)``): an inverse complex FFT along the rows, written as a
    forward one on the conjugate, then an inverse real FFT along the columns."""
    from keras import ops

    rows_last = (*range(len(real.shape) - 2), len(real.shape) - 1, len(real.shape) - 2)
    re, im = ops.fft((ops.transpose(real, rows_last), -ops.transpose(imag, rows_last)))
    re, im = ops.transpose(re, rows_last) / size, -ops.transpose(im, rows_last) / size
    return ops.irfft((re, im), fft_length=size)


def resize_params(param: ImageParam, params: np.ndarray, new: ImageParam) -> np.ndarray:
    """Carry parameters of one octave to the next, larger one, keeping the image the same.

    Fourier: the spectrum is zero-padded in frequency (exact band-limited upsampling) and
    rescaled for the new size's 1/f scaling and FFT normalisation; the new, higher frequencies
    start at zero. Pixel: bilinear resize.
    """
    if param.kind != new.kind:
        raise ValueError("octaves must keep one parameterisation")
    if param.kind == "pixel":
        from keras import ops

        resized = ops.image.resize(params, (new.size, new.size), interpolation="bilinear")
        return np.asarray(ops.convert_to_numpy(resized), dtype="float32")
    small, large = param.size, new.size
    coefficients = (params[..., 0] + 1j * params[..., 1]) * fourier_scale(small, param.decay)
    coefficients *= (large * large) / (small * small)  # irfft2d divides by height × width
    out = np.zeros((*params.shape[:2], large, large // 2 + 1), dtype="complex64")
    positive_rows = small // 2 + 1
    cols = small // 2 + 1
    out[:, :, :positive_rows, :cols] = coefficients[:, :, :positive_rows, :cols]
    negative_rows = small - positive_rows
    if negative_rows:
        out[:, :, large - negative_rows :, :cols] = coefficients[:, :, positive_rows:, :cols]
    out /= fourier_scale(large, new.decay)
    return np.stack([out.real, out.imag], axis=-1).astype("float32")
