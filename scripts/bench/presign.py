#!/usr/bin/env python3
"""Prints presigned SigV4 S3 URL paths for scripts/bench.sh's S3 small-object runs.

wrk cannot sign requests, but it can replay presigned ones: the node verifies each signature
as it would any SigV4 request. Standard library only (hmac, hashlib), so the benchmark needs
no SDK.

Usage: presign.py ENDPOINT ACCESS_KEY SECRET_KEY METHOD BUCKET PREFIX COUNT [REGION]
Prints COUNT lines "PATH?QUERY" for objects PREFIX/0 .. PREFIX/(COUNT-1), valid for an hour.
"""
import datetime
import hashlib
import hmac
import sys
import urllib.parse


def sign(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def main() -> None:
    endpoint, access, secret, method, bucket, prefix, count = sys.argv[1:8]
    region = sys.argv[8] if len(sys.argv) > 8 else "us-east-1"
    host = urllib.parse.urlparse(endpoint).netloc
    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    scope = f"{day}/{region}/s3/aws4_request"
    k = sign(sign(sign(sign(("AWS4" + secret).encode(), day), region), "s3"), "aws4_request")
    quote = lambda s: urllib.parse.quote(s, safe="-_.~")
    out = []
    for i in range(int(count)):
        path = "/" + quote(bucket) + "/" + "/".join(quote(p) for p in f"{prefix}/{i}".split("/"))
        query = {
            "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
            "X-Amz-Credential": f"{access}/{scope}",
            "X-Amz-Date": amz_date,
            "X-Amz-Expires": "3600",
            "X-Amz-SignedHeaders": "host",
        }
        canonical_query = "&".join(f"{quote(k)}={quote(v)}" for k, v in sorted(query.items()))
        canonical = "\n".join([method, path, canonical_query, f"host:{host}\n", "host", "UNSIGNED-PAYLOAD"])
        to_sign = "\n".join(
            ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
        )
        signature = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
        out.append(f"{path}?{canonical_query}&X-Amz-Signature={signature}")
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
