"""A pipeline step (run by python3 inside the sandbox, copied into the repository) that
prints the secret SIGNING_KEY in every form a program is likely to, a few characters per
write with pauses between (so output chunks split inside them), then fails. Standard
library only: the sandbox has no onwatch."""

import base64
import json
import os
import sys
import time
from urllib.parse import quote, quote_plus


def main() -> None:
    value = os.environ["SIGNING_KEY"]
    data = value.encode()
    printed = [value, *value.splitlines(), value.replace("\n", "\r\n")]
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        # Alone, and inside a longer base64 text at each offset its bytes can start.
        printed += [encode(b"x" * n + data + b"y").decode() for n in range(3)]
    printed += [quote(value, safe=""), quote_plus(value), json.dumps(value)[1:-1]]
    printed.append(os.environ["PIN"])
    text = "".join(f"form {i}: {form}\n" for i, form in enumerate(printed))
    for at in range(0, len(text), 13):
        sys.stdout.write(text[at : at + 13])
        sys.stdout.flush()
        time.sleep(0.005)
    sys.exit(1)


if __name__ == "__main__":
    main()
