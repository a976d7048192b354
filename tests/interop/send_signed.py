"""Signs requests with the Standard Webhooks reference package and POSTs
them to a Rust receiver.

Used by tests/it/signing_interop.rs (run with python3; scripts/deps.sh
installs `standardwebhooks`). Reads JSON from stdin:

    {"url": "http://127.0.0.1:PORT/hook", "secret": "whsec_...", "wrong_secret": "whsec_..."}

Sends one request per case and prints a JSON object: case name -> HTTP status.
"""

import json
import sys
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone

from standardwebhooks import Webhook


def post(url: str, body: bytes, headers: dict) -> int:
    req = urllib.request.Request(url, data=body, method="POST", headers={"content-type": "application/json", **headers})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


def signed(wh: Webhook, msg_id: str, when: datetime, body: bytes) -> dict:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": wh.sign(msg_id, when, body.decode()),
    }


def main() -> None:
    request = json.load(sys.stdin)
    url = request["url"]
    wh = Webhook(request["secret"])
    wrong = Webhook(request["wrong_secret"])
    now = datetime.now(tz=timezone.utc)
    body = json.dumps({"order": "ord_123", "total": 4200}).encode()
    results = {
        "valid": post(url, body, signed(wh, "msg_valid", now, body)),
        "tampered_body": post(url, body.replace(b"4200", b"1"), signed(wh, "msg_tampered", now, body)),
        "wrong_secret": post(url, body, signed(wrong, "msg_wrong", now, body)),
        "stale": post(url, body, signed(wh, "msg_stale", now - timedelta(minutes=10), body)),
        "future": post(url, body, signed(wh, "msg_future", now + timedelta(minutes=10), body)),
        "unsigned": post(url, body, {}),
    }
    # Two signatures, as during a rotation: the wrong one first.
    rotating = signed(wh, "msg_rotating", now, body)
    rotating["webhook-signature"] = signed(wrong, "msg_rotating", now, body)["webhook-signature"] + " " + rotating["webhook-signature"]
    results["two_signatures"] = post(url, body, rotating)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
