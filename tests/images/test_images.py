"""Files from outside: typed by content, images re-encoded without metadata, bombs refused."""

from __future__ import annotations

import io

import pytest
from PIL import Image, PngImagePlugin
from pypdf import PdfWriter

from healthforms.images import JPEG, PDF, PNG, UnsafeFile, check_pdf, clean_image, sniff

GPS_IFD = 0x8825
ORIENTATION = 0x0112


def photo_with_gps(size: tuple[int, int] = (40, 20), orientation: int = 1) -> bytes:
    image = Image.new("RGB", size, (200, 30, 30))
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    exif[0x010F] = "PhoneMaker"  # Make
    exif.get_ifd(GPS_IFD).update({1: "N", 2: (51.0, 30.0, 0.0), 3: "W", 4: (0.0, 7.0, 0.0)})
    out = io.BytesIO()
    image.save(out, format="JPEG", exif=exif, comment=b"patient at home")
    return out.getvalue()


def pdf_bytes(pages: int = 1, password: str | None = None) -> bytes:
    writer = PdfWriter()
    for _ in range(pages):
        writer.add_blank_page(width=200, height=200)
    if password:
        writer.encrypt(password)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def test_the_type_comes_from_the_content() -> None:
    assert sniff(photo_with_gps()) == JPEG
    assert sniff(pdf_bytes()) == PDF
    assert sniff(b"GIF89a....") is None
    assert sniff(b"<svg xmlns='http://www.w3.org/2000/svg'/>") is None
    with pytest.raises(UnsafeFile, match="JPEG, PNG or WebP"):
        clean_image(pdf_bytes())
    with pytest.raises(UnsafeFile, match="must be a PDF"):
        check_pdf(photo_with_gps())


def test_a_photo_loses_its_gps_position_and_every_other_tag() -> None:
    source = photo_with_gps()
    assert b"PhoneMaker" in source and b"patient at home" in source
    clean = clean_image(source)
    assert clean.media_type == JPEG
    with Image.open(io.BytesIO(clean.data)) as image:
        assert dict(image.getexif()) == {}
        assert "exif" not in image.info and "comment" not in image.info
    assert b"PhoneMaker" not in clean.data and b"patient at home" not in clean.data


def test_the_exif_orientation_is_applied_before_it_is_dropped() -> None:
    # Orientation 6: the camera was turned; a 40x20 sensor image is a 20x40 picture.
    clean = clean_image(photo_with_gps((40, 20), orientation=6))
    assert (clean.width, clean.height) == (20, 40)


def test_a_png_keeps_its_transparency_but_not_its_text_chunks() -> None:
    image = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "Jane Doe, DOB 1980-01-01")
    out = io.BytesIO()
    image.save(out, format="PNG", pnginfo=info)
    clean = clean_image(out.getvalue())
    assert clean.media_type == PNG and b"Jane Doe" not in clean.data
    with Image.open(io.BytesIO(clean.data)) as back:
        pixel = back.getpixel((0, 0))
        assert back.mode == "RGBA" and isinstance(pixel, tuple) and pixel[3] == 0
    flat = clean_image(out.getvalue(), keep_png=False)
    assert flat.media_type == JPEG


def test_a_decompression_bomb_is_refused_before_it_is_decoded() -> None:
    # 20000 x 20000 one-bit pixels compress to a few KiB and decode to 400 megapixels.
    out = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(out, format="PNG")
    assert len(out.getvalue()) < 200_000
    with pytest.raises(UnsafeFile, match="too large"):
        clean_image(out.getvalue())


def test_large_photos_are_scaled_down_to_the_longest_side() -> None:
    out = io.BytesIO()
    Image.new("RGB", (4000, 1000), (1, 2, 3)).save(out, format="JPEG")
    clean = clean_image(out.getvalue(), max_side=2400)
    assert (clean.width, clean.height) == (2400, 600)


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xd8\xff\xe0" + b"\x00" * 40,
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 40,
        b"RIFF\0\0\0\0WEBPVP8 ",
    ],
    ids=["truncated-jpeg", "truncated-png", "truncated-webp"],
)
def test_damaged_images_are_refused(data: bytes) -> None:
    with pytest.raises(UnsafeFile, match="damaged"):
        clean_image(data)


def test_pdfs_are_kept_as_sent_within_their_page_budget() -> None:
    source = pdf_bytes(pages=3)
    clean = check_pdf(source)
    assert clean.data == source and clean.pages == 3 and clean.extension == "pdf"
    with pytest.raises(UnsafeFile, match="more than 2 pages"):
        check_pdf(source, max_pages=2)
    with pytest.raises(UnsafeFile, match="password"):
        check_pdf(pdf_bytes(password="secret"))
    with pytest.raises(UnsafeFile, match="damaged"):
        check_pdf(b"%PDF-1.7\n" + b"\x00" * 100)
