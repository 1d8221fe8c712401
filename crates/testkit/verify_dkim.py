#!/usr/bin/python3
"""Verify every DKIM-Signature of one message with dkimpy, offline.

Usage: /usr/bin/python3 verify_dkim.py RECORDS.json < message.eml

RECORDS.json maps DNS names to TXT record values, e.g.
  {"default._domainkey.example.com": "v=DKIM1; k=rsa; p=MIIB..."}
Nothing is looked up in the real DNS: a name that is not in the file is
answered as NXDOMAIN.

Prints one JSON object on stdout:
  {"signatures": [{"index": 0, "d": "example.com", "s": "default",
                   "a": "rsa-sha256", "result": "pass", "reason": null}, ...]}
in header order (index 0 is the topmost DKIM-Signature). "result" is
"pass" or "fail"; "reason" says why a signature failed. Exits non-zero only
when the verifier itself could not run.

Run it with Debian's /usr/bin/python3 (package python3-dkim), not a
python3 that happens to come first in PATH.
"""

import json
import logging
import sys

import dkim
from dkim.util import InvalidTagValueList, parse_tag_value


class LastError(logging.Handler):
    """Keeps the last error dkimpy logged: its only account of some failures."""

    def __init__(self):
        super().__init__(level=logging.ERROR)
        self.message = None

    def emit(self, record):
        self.message = record.getMessage()


def load_records(path):
    with open(path, encoding="utf-8") as f:
        raw = json.load(f)
    return {name.lower().rstrip("."): value.encode() for name, value in raw.items()}


def stub_dns(records):
    def lookup(name, timeout=5):
        if isinstance(name, bytes):
            name = name.decode()
        return records.get(name.lower().rstrip("."))

    return lookup


def signature_tags(message, index):
    """d=, s=, a= of the index-th signature, read without dkimpy's checks."""
    signatures = [
        value
        for name, value in dkim.rfc822_parse(message)[0]
        if name.lower() == b"dkim-signature"
    ]
    try:
        tags = parse_tag_value(signatures[index])
    except InvalidTagValueList:
        tags = {}
    return {key: tags.get(key.encode(), b"").decode(errors="replace") for key in ("d", "s", "a")}


def count_signatures(message):
    headers, _ = dkim.rfc822_parse(message)
    return sum(1 for name, _ in headers if name.lower() == b"dkim-signature")


def verify_one(message, index, lookup):
    log = logging.getLogger("verify_dkim.%d" % index)
    log.propagate = False
    last_error = LastError()
    log.handlers = [last_error]
    verifier = dkim.DKIM(message, logger=log)
    try:
        passed = bool(verifier.verify(idx=index, dnsfunc=lookup))
        reason = None if passed else (last_error.message or "signature verification failed")
    except dkim.DKIMException as e:
        passed, reason = False, "%s: %s" % (type(e).__name__, e)
    verdict = {"index": index, "result": "pass" if passed else "fail", "reason": reason}
    verdict.update(signature_tags(message, index))
    return verdict


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: verify_dkim.py RECORDS.json < message.eml")
    lookup = stub_dns(load_records(sys.argv[1]))
    message = sys.stdin.buffer.read()
    verdicts = [verify_one(message, i, lookup) for i in range(count_signatures(message))]
    json.dump({"signatures": verdicts}, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
