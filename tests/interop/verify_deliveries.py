"""Verifies deliveries with the Standard Webhooks reference package.

Used by tests/it/signing_interop.rs (run with python3; scripts/deps.sh
installs `standardwebhooks`). Reads JSON from stdin:

    {"checks": [{"secret": "whsec_...", "headers": {...}, "body_hex": "..."}, ...]}

A secret without the `whsec_` prefix is a raw key (its UTF-8 bytes), as the
dispatcher uses it. Prints one line per check: `ok`, or `err <reason>`.
Exits non-zero only when it cannot run (the package is missing, bad input).
"""

import json
import sys

from standardwebhooks import Webhook, WebhookVerificationError


def main() -> None:
    request = json.load(sys.stdin)
    for check in request["checks"]:
        secret = check["secret"]
        key = secret if secret.startswith("whsec_") else secret.encode()
        body = bytes.fromhex(check["body_hex"])
        try:
            Webhook(key).verify(body, check["headers"])
            print("ok")
        except WebhookVerificationError as e:
            print(f"err {e}")


if __name__ == "__main__":
    main()
