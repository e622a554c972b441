import pytest

from edge_svp.errors import EdgeSVPError
from edge_svp.memory.size import format_bytes, parse_size


@pytest.mark.parametrize(
    "text, expected",
    [
        ("512MB", 512_000_000),
        ("512mb", 512_000_000),
        ("1.5GiB", 1_610_612_736),
        ("1.5gib", 1_610_612_736),
        ("300000000", 300_000_000),
        (300_000_000, 300_000_000),
        ("64 KiB", 65_536),
        ("2G", 2 * 2**30),
        ("1kb", 1000),
        ("7b", 7),
    ],
)
def test_sizes_in_decimal_and_binary_units(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "MB", "12 parsecs", "-5MB", "1.2.3GB", "0", "0MB", "5 M B"])
def test_bad_sizes_are_clear_errors(text):
    with pytest.raises(EdgeSVPError, match="memory size"):
        parse_size(text)


def test_format_bytes():
    assert format_bytes(512) == "512 B"
    assert format_bytes(1536) == "1.5 KiB"
    assert format_bytes(3 * 2**30) == "3.0 GiB"
