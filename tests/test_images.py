"""Every Pillow mode -> 8-bit RGB against a numpy reference; the pixel limit; unsupported extensions reported.

The reference is written from the documented rules alone: 16-bit values / 257 rounded, 8-bit values
as they are, transparency composited over white (c a + 255 (1 - a)), CMYK as 255 (1 - C)(1 - K).
16-bit colour PNGs are written by a small encoder here, since Pillow cannot write them.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from semisup.data import folder
from semisup.data.images import TooManyPixels, decode_image, to_rgb8
from tests.support import write_params
from tests.test_data_sources import make_folder

RNG = np.random.default_rng(7)
H, W = 5, 6


def reference(
    color: np.ndarray, bits: int, alpha: np.ndarray | None = None, alpha_bits: int = 8
) -> np.ndarray:
    """color (H, W, 1|3) of `bits`-bit values, alpha (H, W) of `alpha_bits` -> (H, W, 3) uint8, over white."""
    c = color.astype(np.float64) / (2**bits - 1)
    if alpha is not None:
        a = alpha.astype(np.float64)[..., None] / (2**alpha_bits - 1)
        c = c * a + 1.0 * (1 - a)
    out = np.floor(c * 255 + 0.5).astype(np.uint8)  # round half up; no exact halves occur here
    return np.repeat(out, 3, axis=-1) if out.shape[-1] == 1 else out


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(
    width: int, height: int, color_type: int, rows: bytes, trns: bytes = b"", exif: bytes = b""
) -> bytes:
    """A 16-bit PNG file of the given header and filtered row bytes, with tRNS and eXIf chunks if given."""
    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    extra = (_chunk(b"tRNS", trns) if trns else b"") + (_chunk(b"eXIf", exif) if exif else b"")
    idat = _chunk(b"IDAT", zlib.compress(rows))
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + extra + idat + _chunk(b"IEND", b"")


def png16(array: np.ndarray, color_type: int, trns: bytes = b"", exif: bytes = b"") -> bytes:
    """A 16-bit PNG (color type 0 gray, 2 RGB, 4 gray+alpha, 6 RGBA) of a (H, W[, C]) uint16 array."""
    h, w = array.shape[:2]
    rows = b"".join(b"\x00" + array[y].astype(">u2").tobytes() for y in range(h))
    return _png(w, h, color_type, rows, trns, exif)


def saved(img: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def u16(*shape: int) -> np.ndarray:
    # Include the extremes and values where the high byte and round(v / 257) differ (e.g. 32767, 383).
    values = RNG.integers(0, 65536, shape).astype(np.uint16)
    values.flat[:4] = [0, 65535, 32767, 383]
    return values


def u8(*shape: int) -> np.ndarray:
    return RNG.integers(0, 256, shape).astype(np.uint8)


def test_16bit_gray_png_is_scaled_not_clipped() -> None:
    gray = u16(H, W)
    got = decode_image(saved(Image.fromarray(gray)))  # Pillow writes mode I;16 as a 16-bit gray PNG
    np.testing.assert_array_equal(got, reference(gray[..., None], 16))
    assert got[0, 2, 0] == 127 and got[0, 3, 0] == 1  # 32767 / 257 = 127.5 - tiny; 383 / 257 = 1.49


@pytest.mark.parametrize("color_type, channels", [(2, 3), (6, 4), (4, 2), (0, 1)])
def test_16bit_color_pngs_are_scaled_by_257(color_type: int, channels: int) -> None:
    pixels = u16(H, W, channels) if channels > 1 else u16(H, W)
    got = decode_image(png16(pixels, color_type))
    if color_type == 2:
        want = reference(pixels, 16)
    elif color_type == 6:
        want = reference(pixels[..., :3], 16, pixels[..., 3], alpha_bits=16)
    elif color_type == 4:
        want = reference(pixels[..., :1], 16, pixels[..., 1], alpha_bits=16)
    else:
        want = reference(pixels[..., None], 16)
    np.testing.assert_array_equal(got, want)


def test_16bit_colour_key_is_transparent_over_white() -> None:
    # tRNS of a 16-bit image holds full 16-bit samples: only exact matches are transparent. Pixel (0, 1)
    # differs from the key in the low byte only, so it keeps its colour though it would look equal at 8 bits.
    key = (1000, 2000, 3000)
    rgb = u16(H, W, 3)
    rgb[0, 0], rgb[1, 2], rgb[0, 1] = key, key, (1000, 2000, 3001)
    got = decode_image(png16(rgb, 2, struct.pack(">HHH", *key)))
    alpha = np.where((rgb == key).all(-1), 0, 255)
    np.testing.assert_array_equal(got, reference(rgb, 16, alpha))
    assert got[0, 0].tolist() == got[1, 2].tolist() == [255, 255, 255]
    assert got[0, 1].tolist() == [4, 8, 12]
    gray = u16(H, W)
    gray.flat[5] = 700
    got = decode_image(png16(gray, 0, struct.pack(">H", 700)))
    np.testing.assert_array_equal(got, reference(gray[..., None], 16, np.where(gray == 700, 0, 255)))


@pytest.mark.parametrize("mode", ["I;16", "I;16L", "I;16B", "I;16N"])
def test_i16_variants_in_memory(mode: str) -> None:
    gray = u16(H, W)
    dtype = ">u2" if mode == "I;16B" else "<u2"
    img = Image.frombytes(mode, (W, H), gray.astype(dtype).tobytes())
    np.testing.assert_array_equal(to_rgb8(img), reference(gray[..., None], 16))


def test_one_bit_gray_rgb_and_alpha_pngs() -> None:
    bits = RNG.integers(0, 2, (H, W)).astype(bool)
    np.testing.assert_array_equal(decode_image(saved(Image.fromarray(bits))), reference(bits[..., None], 1))
    gray, rgb, alpha = u8(H, W), u8(H, W, 3), u8(H, W)
    np.testing.assert_array_equal(decode_image(saved(Image.fromarray(gray))), reference(gray[..., None], 8))
    np.testing.assert_array_equal(decode_image(saved(Image.fromarray(rgb))), rgb)
    rgba = Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    np.testing.assert_array_equal(decode_image(saved(rgba)), reference(rgb, 8, alpha))
    la = Image.fromarray(np.dstack([gray, alpha]), "LA")
    np.testing.assert_array_equal(decode_image(saved(la)), reference(gray[..., None], 8, alpha))


def test_palette_with_and_without_transparency() -> None:
    palette = u8(16, 3)
    index = RNG.integers(0, 16, (H, W)).astype(np.uint8)
    img = Image.fromarray(index, "P")
    img.putpalette(palette.ravel().tolist())
    np.testing.assert_array_equal(decode_image(saved(img)), palette[index])
    # tRNS: one alpha per palette entry (here 0 for entry 3, half for entry 5, opaque elsewhere).
    alphas = np.full(16, 255, np.uint8)
    alphas[3], alphas[5] = 0, 128
    index.flat[:2] = [3, 5]
    img = Image.fromarray(index, "P")
    img.putpalette(palette.ravel().tolist())
    got = decode_image(saved(img, transparency=alphas.tobytes()))
    np.testing.assert_array_equal(got, reference(palette[index], 8, alphas[index]))
    assert got[0, 0].tolist() == [255, 255, 255]  # fully transparent: the white background


def test_colour_key_transparency_of_gray_and_rgb() -> None:
    gray = u8(H, W)
    gray.flat[0] = 9
    got = decode_image(saved(Image.fromarray(gray), transparency=9))
    alpha = np.where(gray == 9, 0, 255)
    np.testing.assert_array_equal(got, reference(gray[..., None], 8, alpha))
    rgb = u8(H, W, 3)
    rgb[0, 0] = (1, 2, 3)
    got = decode_image(saved(Image.fromarray(rgb), transparency=(1, 2, 3)))
    np.testing.assert_array_equal(got, reference(rgb, 8, np.where((rgb == (1, 2, 3)).all(-1), 0, 255)))


def test_cmyk_and_premultiplied_modes_in_memory() -> None:
    cmyk = u8(H, W, 4)
    got = to_rgb8(Image.frombytes("CMYK", (W, H), cmyk.tobytes()))
    c = cmyk.astype(np.float64) / 255
    want = np.floor((1 - c[..., :3]) * (1 - c[..., 3:]) * 255 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(got, want)
    # RGBa: colour already multiplied by alpha; over white: c_premult + 255 (1 - a).
    rgb, alpha = u8(H, W, 3), u8(H, W)
    premult = np.floor(rgb.astype(np.float64) * alpha[..., None] / 255 + 0.5).astype(np.uint8)
    got = to_rgb8(Image.frombytes("RGBa", (W, H), np.dstack([premult, alpha]).tobytes()))
    want = np.floor(premult + 255 * (1 - alpha[..., None] / 255) + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(got, want)


def test_ycbcr_matches_the_jfif_formula_within_one() -> None:
    ycc = u8(H, W, 3).astype(np.float64)
    y, cb, cr = ycc[..., 0], ycc[..., 1] - 128, ycc[..., 2] - 128
    want = np.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], -1)
    got = to_rgb8(Image.frombytes("YCbCr", (W, H), ycc.astype(np.uint8).tobytes()))
    assert np.abs(got.astype(int) - np.clip(np.rint(want), 0, 255)).max() <= 1


def test_float_pixels_have_no_range_and_are_refused() -> None:
    with pytest.raises(ValueError, match="no defined 0..255 range"):
        to_rgb8(Image.fromarray(np.zeros((2, 2), np.float32)))


def test_jpeg_decodes_once_to_rgb() -> None:
    rgb = np.full((8, 8, 3), (200, 30, 90), np.uint8)
    got = decode_image(saved(Image.fromarray(rgb), "JPEG", quality=100))
    assert got.shape == (8, 8, 3) and np.abs(got.astype(int) - rgb).max() <= 3


# Four blocks of 8 rows x 16 columns in distinct colours: the stored image is 16 rows x 32 columns.
RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)
QUADRANTS = np.vstack(
    [np.hstack([np.full((8, 16, 3), c, np.uint8) for c in row]) for row in ((RED, GREEN), (BLUE, WHITE))]
)


def _corners(image: np.ndarray) -> list[tuple[int, ...]]:
    """The colour near each corner, clockwise from top-left, rounded to 0/255 (JPEG blurs the edges)."""
    h, w = image.shape[:2]
    at = [(2, 2), (2, w - 3), (h - 3, w - 3), (h - 3, 2)]
    return [tuple(int(round(v / 255)) * 255 for v in image[y, x]) for y, x in at]


def _orientation(tag: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = tag
    return exif


def test_exif_orientation_is_applied_by_the_folder_source(tmp_path: Path) -> None:
    # The stored image is 16 rows by 32 columns, red top-left, green top-right,
    # blue bottom-left, white bottom-right. EXIF orientation 6 says: show it rotated 90 degrees clockwise,
    # so it stands 32 rows tall with blue top-left, red top-right, green bottom-right, white bottom-left.
    stored = QUADRANTS
    assert _corners(stored) == [RED, GREEN, WHITE, BLUE]
    path = tmp_path / "photo.jpg"
    Image.fromarray(stored).save(path, "JPEG", quality=95, exif=_orientation(6))
    data = path.read_bytes()
    got = decode_image(data)
    assert got.shape == (32, 16, 3)
    assert _corners(got) == [BLUE, RED, GREEN, WHITE]
    # Through the folder source's own read of the file (checked against its index entry, then resized).
    entry = {"file": path.name, "sha256": hashlib.sha256(data).hexdigest()}
    assert _corners(folder._decode(tmp_path, entry, 16, None)) == [BLUE, RED, GREEN, WHITE]
    # Orientation 3 (rotated 180 degrees) and 1 (as stored).
    Image.fromarray(stored).save(path, "JPEG", quality=95, exif=_orientation(3))
    assert _corners(decode_image(path.read_bytes())) == [WHITE, BLUE, RED, GREEN]
    Image.fromarray(stored).save(path, "JPEG", quality=95, exif=_orientation(1))
    assert _corners(decode_image(path.read_bytes())) == [RED, GREEN, WHITE, BLUE]


def test_exif_orientation_of_a_16bit_png() -> None:
    # 16-bit colour PNGs take their own decoder (TensorFlow's); an eXIf chunk is applied there too.
    stored = QUADRANTS.astype(np.uint16) * 257
    exif = _orientation(8).tobytes()  # 90 degrees counter-clockwise
    exif = exif.removeprefix(b"Exif\x00\x00")  # the eXIf chunk holds the TIFF data alone
    got = decode_image(png16(stored, 2, exif=exif))
    assert got.shape == (32, 16, 3)
    assert _corners(got) == [GREEN, WHITE, BLUE, RED]


def test_pixel_limit_is_checked_from_the_header_before_decoding() -> None:
    # A PNG header claiming 100000 x 100000 pixels and no pixel data: refused for its size, not decoded.
    bomb = _png(100_000, 100_000, 0, b"\x00" * 64)
    with pytest.raises(TooManyPixels, match=r"100000x100000 = 10000000000 pixels, over data.max_pixels"):
        decode_image(bomb, max_pixels=10**8)
    decode_image(saved(Image.fromarray(u8(H, W))), max_pixels=H * W)  # at the limit: fine
    with pytest.raises(TooManyPixels):
        decode_image(saved(Image.fromarray(u8(H, W))), max_pixels=H * W - 1)


def _download(tmp_path: Path, root: Path, **data) -> object:
    from stages import download

    params = write_params(
        tmp_path / "params.yaml",
        {"data.source": "folder", "data.path": str(root), "data.labeled_per_class": 2}
        | {f"data.{k}": v for k, v in data.items()},
    )
    args = ["--params", str(params), "--raw-dir", str(tmp_path / "raw")]
    return CliRunner().invoke(download.main, args, catch_exceptions=False)


def test_bomb_over_max_pixels_is_refused_with_its_path(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "imgs")
    Image.fromarray(u8(300, 200, 3)).save(root / "dog" / "huge.png")
    result = _download(tmp_path, root, max_pixels=50_000)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output
    assert lines[0].startswith(
        f"error: {root / 'dog' / 'huge.png'}: refused before decoding: 200x300 = 60000"
    )
    assert "raise data.max_pixels" in lines[0]
    assert not (tmp_path / "raw" / folder.INDEX_FILE).exists()
    # With skip, it is left out and counted like any unreadable file.
    result = _download(tmp_path, root, max_pixels=50_000, on_bad_image="skip")
    assert result.exit_code == 0, result.output
    index = json.loads((tmp_path / "raw" / folder.INDEX_FILE).read_text())
    assert [s["file"] for s in index["skipped"]] == ["dog/huge.png"]


def test_unsupported_extensions_are_counted_and_reported(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "imgs")  # notes.txt in each of the three class folders
    Image.fromarray(u8(8, 8, 3)).save(root / "cat" / "extra.gif")
    (root / "cat" / ".DS_Store").write_bytes(b"hidden files are not images and not reported")
    result = _download(tmp_path, root)
    assert result.exit_code == 0, result.output
    assert "4 files not read for their extension (.gif, .txt; PNG and JPEG are read)" in result.stdout
    index = json.loads((tmp_path / "raw" / folder.INDEX_FILE).read_text())
    assert index["unsupported"] == ["cat/extra.gif", "cat/notes.txt", "dog/notes.txt", "fox/notes.txt"]
