"""Image I/O shared by the TFDS builder and prediction: strict decoding and letterboxing."""

import io
import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps


class ImageError(ValueError):
    """An image file that cannot be used; `path` and `reason` say which and why."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def load_rgb(path: str | os.PathLike, *, min_size: int | None = None) -> np.ndarray:
    """Decodes an image file completely and returns it as uint8[H, W, 3] RGB.

    Grayscale, palette, CMYK and RGBA images are converted to RGB (alpha is dropped) and
    EXIF orientation is applied. Truncated files are errors: PIL's default
    `ImageFile.LOAD_TRUNCATED_IMAGES = False` must not be changed elsewhere.

    Args:
      path: image file (any format PIL reads; TOP uses JPEG).
      min_size: JPEG only: let the decoder downscale by 1/2, 1/4 or 1/8 (DCT scaling) as long
        as both sides stay >= min_size. Several times faster for small outputs and still reads
        the whole file, so truncation is still detected.

    Raises:
      ImageError: the file is missing, empty, not an image, truncated or corrupt.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ImageError(path, "file is missing") from None
    except OSError as err:
        raise ImageError(path, f"cannot read file ({err.strerror})") from None
    if size == 0:
        raise ImageError(path, "file is empty (0 bytes)")
    try:
        with Image.open(path) as img:
            if min_size is not None:
                img.draft("RGB", (min_size, min_size))
            img.load()
            img = ImageOps.exif_transpose(img)
            return np.asarray(img.convert("RGB"))
    except Image.UnidentifiedImageError:
        raise ImageError(path, "not an image file PIL can read") from None
    except Image.DecompressionBombError as err:
        raise ImageError(path, f"image too large ({err})") from None
    except (OSError, SyntaxError, ValueError) as err:
        # PIL reports truncated and corrupt data as OSError ("image file is truncated ...").
        raise ImageError(path, f"truncated or corrupt image ({err})") from None


def letterbox(image: np.ndarray, size: int) -> np.ndarray:
    """Fits uint8[H, W, 3] into uint8[size, size, 3] keeping the aspect ratio.

    The long side is resized to `size` with area interpolation and the short side is padded
    centred with black, so TOP's 1024x768 photographs get black bars top and bottom.
    """
    height, width = image.shape[:2]
    scale = size / max(height, width)
    new_h = max(1, round(height * scale))
    new_w = max(1, round(width * scale))
    if (new_h, new_w) != (height, width):
        # INTER_AREA averages source pixels (no aliasing) when shrinking; it degrades to
        # nearest-neighbour when enlarging, so small inputs use bilinear. cv2 wants (w, h).
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        image = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    out = np.zeros((size, size, 3), dtype=np.uint8)
    top = (size - new_h) // 2
    left = (size - new_w) // 2
    out[top : top + new_h, left : left + new_w] = image
    return out


def encode_jpeg(image: np.ndarray, quality: int = 95) -> bytes:
    """Encodes uint8[H, W, 3] RGB as JPEG bytes (4:4:4 chroma, so thin vessels keep colour)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality, subsampling=0)
    return buffer.getvalue()
