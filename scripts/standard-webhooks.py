#!/usr/bin/env python3
"""Signs or verifies with the official Standard Webhooks library (PyPI `standardwebhooks`), so the
tests prove the intake agrees with it byte for byte (crates/tw-cli/tests/cli/senders.rs).

    standard-webhooks.py sign SECRET MSG_ID TIMESTAMP BODY_FILE   -> prints the webhook-signature
    standard-webhooks.py verify SECRET MSG_ID TIMESTAMP SIGNATURE BODY_FILE  -> exit 0 when valid

Exit 3 when the library is not installed (`pip install standardwebhooks`).
"""
import sys
from datetime import datetime, timezone

try:
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError
except ImportError:
    print("the standardwebhooks package is not installed (pip install standardwebhooks)", file=sys.stderr)
    sys.exit(3)


def main(argv):
    if len(argv) == 6 and argv[1] == "sign":
        _, _, secret, msg_id, ts, body_file = argv
        body = open(body_file, "rb").read().decode()
        print(Webhook(secret).sign(msg_id, datetime.fromtimestamp(int(ts), tz=timezone.utc), body))
        return 0
    if len(argv) == 7 and argv[1] == "verify":
        _, _, secret, msg_id, ts, signature, body_file = argv
        body = open(body_file, "rb").read()
        headers = {"webhook-id": msg_id, "webhook-timestamp": ts, "webhook-signature": signature}
        try:
            Webhook(secret).verify(body, headers, json_parse=False)
        except WebhookVerificationError as e:
            print(f"not verified: {e}", file=sys.stderr)
            return 1
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
