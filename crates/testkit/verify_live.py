#!/usr/bin/python3
"""Verify DKIM signatures with dkimpy against a live DNS server, one message
after another, for as long as the test feeds it.

Usage: /usr/bin/python3 verify_live.py SERVER PORT

Reads messages from stdin, each as a 4-byte big-endian length and the
message bytes (CRLF line endings); for each prints one JSON line with a verdict per DKIM-Signature, top first:
  {"signatures": [{"s": "s202612", "d": "example.com", "result": "pass",
                   "reason": null}]} dkimpy's dnsfunc asks SERVER:PORT (the
test's BIND) with dnspython, without caching, at the moment it verifies:
what the zone publishes then is what counts.

Run it with Debian's /usr/bin/python3 (packages python3-dkim and
python3-dnspython).
"""

import json
import logging
import struct
import sys

import dkim
import dns.message
import dns.query
import dns.rdatatype
from dkim.util import InvalidTagValueList, parse_tag_value


class LastError(logging.Handler):
    """Keeps the last error dkimpy logged: its only account of some failures."""

    def __init__(self):
        super().__init__(level=logging.ERROR)
        self.message = None

    def emit(self, record):
        self.message = record.getMessage()


def live_dns(server, port):
    def lookup(name, timeout=5):
        if isinstance(name, bytes):
            name = name.decode()
        query = dns.message.make_query(name, dns.rdatatype.TXT)
        answer, _ = dns.query.udp_with_fallback(query, server, port=port, timeout=timeout)
        for rrset in answer.answer:
            if rrset.rdtype == dns.rdatatype.TXT:
                for rdata in rrset:
                    return b"".join(rdata.strings)
        return None

    return lookup


def signature_tags(message, index):
    signatures = [
        value
        for name, value in dkim.rfc822_parse(message)[0]
        if name.lower() == b"dkim-signature"
    ]
    try:
        parsed = parse_tag_value(signatures[index])
    except InvalidTagValueList:
        return {}
    return {k: parsed.get(k.encode(), b"").decode(errors="replace") for k in ("s", "d")}


def count_signatures(message):
    headers, _ = dkim.rfc822_parse(message)
    return sum(1 for name, _ in headers if name.lower() == b"dkim-signature")


def verify_one(message, index, lookup):
    log = logging.getLogger("verify_live.%d" % index)
    log.propagate = False
    last_error = LastError()
    log.handlers = [last_error]
    try:
        passed = bool(dkim.DKIM(message, logger=log).verify(idx=index, dnsfunc=lookup))
        reason = None if passed else (last_error.message or "signature verification failed")
    except dkim.DKIMException as e:
        passed, reason = False, "%s: %s" % (type(e).__name__, e)
    verdict = {"result": "pass" if passed else "fail", "reason": reason}
    verdict.update(signature_tags(message, index))
    return verdict


def main():
    server, port = sys.argv[1], int(sys.argv[2])
    lookup = live_dns(server, port)
    stdin = sys.stdin.buffer
    while True:
        head = stdin.read(4)
        if len(head) < 4:
            return
        (length,) = struct.unpack(">I", head)
        message = stdin.read(length)
        verdicts = [verify_one(message, i, lookup) for i in range(count_signatures(message))]
        sys.stdout.write(json.dumps({"signatures": verdicts}) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
