"""The lockfile parser: exactly pinned, hash-pinned, or refused with the line number."""

import pytest

from slotctl.core import lockfile
from slotctl.errors import InputError

H1, H2 = "a" * 64, "b" * 64


def test_continuation_lines_comments_and_names_are_normalised():
    text = f"# header\nTrade_Kit==1.0.0 \\\n    --hash=sha256:{H1} \\\n    --hash=sha256:{H2}  # two wheels\nnumpy==2.1.0 --hash=sha256:{H1}\n"
    pins = lockfile.parse(text, "req.lock")
    assert pins["trade-kit"].version == "1.0.0"
    assert pins["trade-kit"].hashes == (H1, H2)
    assert set(pins) == {"trade-kit", "numpy"}


def test_environment_markers_are_kept():
    pins = lockfile.parse(f"uvloop==0.21.0 ; sys_platform != 'win32' --hash=sha256:{H1}\n", "req.lock")
    assert pins["uvloop"].marker == "sys_platform != 'win32'"


@pytest.mark.parametrize("text, message", [
    ("tradekit==1.0.0\n", "req.lock:1: tradekit==1.0.0 has no --hash=sha256"),
    (f"tradekit>=1.0 --hash=sha256:{H1}\n", "req.lock:1: expected 'name==version"),
    (f"tradekit --hash=sha256:{H1}\n", "req.lock:1: expected 'name==version"),
    (f"\n\ntradekit==1.0 --hash=md5:{'a' * 32}\n", "req.lock:3: expected only --hash=sha256"),
    (f"tradekit==1.0 --hash=sha256:{H1[:-1]}\n", "req.lock:1: expected only --hash=sha256"),
    (f"--index-url https://example.invalid/simple\ntradekit==1.0 --hash=sha256:{H1}\n", "req.lock:1: --index-url: where packages come"),
    (f"tradekit==1.0 --hash=sha256:{H1}\nTradeKit==1.1 --hash=sha256:{H2}\n", "req.lock:2: tradekit is pinned twice"),
    (f"-e ./local --hash=sha256:{H1}\n", "req.lock:1: expected"),
])
def test_unpinned_or_unhashed_lines_are_refused_with_their_line(text, message):
    with pytest.raises(InputError) as e:
        lockfile.parse(text, "req.lock")
    assert message in e.value.message
