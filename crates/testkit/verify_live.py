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

The verdicts come from verify_dkim.py (beside this file), so that the
offline and the live checks judge a signature the same way; each verdict
also carries "index" and "a".

Run it with Debian's /usr/bin/python3 (packages python3-dkim and
python3-dnspython).
"""

import json
import struct
import sys

import dns.message
import dns.query
import dns.rdatatype

from verify_dkim import count_signatures, verify_one


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
