"""How fast secrets are masked in pipeline output, against only decoding it.

    .venv/bin/python bench/masking.py [--megabytes 50] [--secrets 10]

Builds `--megabytes` of build output like pip, pytest and npm print (one line in 2,000 prints
a secret, raw, base64 or URL-encoded), and `--secrets` service secrets: API tokens, passwords
with punctuation and one RSA private key in PEM. Times `Masker.feed` over the output in
chunks of 64 KiB (what a pipe read gives under load) and 4 KiB, and `Masker.mask` over it at
once; prints MB/s for each and for the baseline (UTF-8 decoding alone), and checks that no
planted secret is left in the output. Then the worst case: as much random base64 (a step
printing a blob), where any character may begin a secret. The load average is printed too.
"""

from __future__ import annotations

import argparse
import base64
import codecs
import os
import random
import string
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from urllib.parse import quote

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from onwatch.core.masking import Masker

LINES = [
    "Collecting {pkg}>=1.{n} (from -r requirements.txt (line {n}))",
    "  Downloading https://files.pythonhosted.org/packages/{hex}/{pkg}-1.{n}-py3-none-any.whl",
    "tests/test_{pkg}.py::test_{pkg}_case_{n} PASSED                          [ {n}%]",
    "npm WARN deprecated {pkg}@2.{n}.0: this library is no longer supported",
    "[{n}/{n}] Building CXX object src/{pkg}/CMakeFiles/{pkg}.dir/{pkg}.cpp.o",
    "INFO  {pkg}.migrations: applied 00{n}_{pkg} in 0.{n}s — ok",
]
PACKAGES = ["requests", "django", "numpy", "left-pad", "webpack", "pytest", "chalk", "ünïcode"]


def make_secrets(count: int, rng: random.Random) -> dict[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    found = {"DEPLOY_KEY": pem}
    for i in range(count - 1):
        alphabet = string.ascii_letters + string.digits + "!@#%/+= "[:i]
        found[f"SECRET_{i}"] = "".join(rng.choice(alphabet) for _ in range(rng.randint(12, 40)))
    return found


def make_output(megabytes: int, secrets: dict[str, str], rng: random.Random) -> bytes:
    values = list(secrets.values())
    lines, size, n = [], 0, 0
    while size < megabytes * 1_000_000:
        n += 1
        if n % 2000 == 0:
            value = rng.choice(values).encode()
            shown = rng.choice([value, base64.b64encode(value), quote(value).encode()])
            line = b"export TOKEN=" + shown + b"\n"
        else:
            template = rng.choice(LINES)
            text = template.format(pkg=rng.choice(PACKAGES), n=rng.randint(1, 99), hex="ab/cd")
            line = text.encode() + b"\n"
        lines.append(line)
        size += len(line)
    return b"".join(lines)


def stream(make: Callable[[], Masker], data: bytes, size: int) -> str:
    masker = make()
    out = [masker.feed(data[i : i + size]) for i in range(0, len(data), size)]
    return "".join(out) + masker.flush()


def decode_only(data: bytes, size: int) -> str:
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    out = [decoder.decode(data[i : i + size]) for i in range(0, len(data), size)]
    return "".join(out) + decoder.decode(b"", final=True)


def timed(fn: Callable[[], str]) -> tuple[float, str]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=50)
    parser.add_argument("--secrets", type=int, default=10)
    args = parser.parse_args()
    rng = random.Random(7)  # noqa: S311 - the same output every run, not a secret
    secrets = make_secrets(args.secrets, rng)
    data = make_output(args.megabytes, secrets, rng)
    mb = len(data) / 1_000_000
    print(f"{mb:.1f} MB of build output, {len(secrets)} secrets, load {os.getloadavg()[0]:.2f}")
    for label, size in (("64 KiB chunks", 65536), ("4 KiB chunks", 4096)):
        base, _ = timed(partial(decode_only, data, size))
        spent, out = timed(partial(stream, partial(Masker, secrets), data, size))
        print(f"feed, {label}: {mb / spent:.0f} MB/s (decoding alone {mb / base:.0f} MB/s)")
        assert not any(v in out for v in secrets.values()), "a secret was left in the output"
    text = data.decode()
    spent, out = timed(lambda: Masker(secrets).mask(text))
    print(f"mask, whole text: {mb / spent:.0f} MB/s; labels in output: {out.count('[secret ')}")
    # The worst case: every character may start a secret's anchor (a step printing a blob).
    noise = base64.b64encode(rng.randbytes(len(data) * 3 // 4))
    spent, _ = timed(partial(stream, partial(Masker, secrets), noise, 65536))
    print(f"feed, 64 KiB chunks of base64 noise: {len(noise) / 1_000_000 / spent:.0f} MB/s")


if __name__ == "__main__":
    main()
