#!/usr/bin/env python3
"""aws-chunked uploads as SDKs send them over TLS, written by hand (standard library only):
signed chunks (STREAMING-AWS4-HMAC-SHA256-PAYLOAD) and unsigned chunks with a checksum trailer
(STREAMING-UNSIGNED-PAYLOAD-TRAILER), each intact and corrupted. boto3 and aws-cli use these
only over HTTPS, so the client tests cannot reach them.

Usage: aws_chunked.py HOST:PORT ACCESS_KEY SECRET_KEY BUCKET
Prints one line per case, "case status object-after", and exits non-zero on a surprise.
"""
import base64
import datetime
import hashlib
import hmac
import http.client
import sys
import zlib

HOSTPORT, AK, SK, BUCKET = sys.argv[1:5]
REGION = "us-east-1"


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def signing_key(day: str) -> bytes:
    k = ("AWS4" + SK).encode()
    for part in (day, REGION, "s3", "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    return k


def request(method, path, headers, body=b""):
    now = datetime.datetime.now(datetime.timezone.utc)
    amz = now.strftime("%Y%m%dT%H%M%SZ")
    scope = f"{amz[:8]}/{REGION}/s3/aws4_request"
    headers = {"host": HOSTPORT, "x-amz-date": amz, **headers}
    names = sorted(headers)
    canonical = "\n".join(
        [method, path, "", "".join(f"{n}:{headers[n]}\n" for n in names), ";".join(names), headers["x-amz-content-sha256"]]
    )
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz, scope, sha(canonical.encode())])
    key = signing_key(amz[:8])
    seed = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    if callable(body):
        body = body(key, amz, scope, seed)
    auth = f"AWS4-HMAC-SHA256 Credential={AK}/{scope}, SignedHeaders={';'.join(names)}, Signature={seed}"
    conn = http.client.HTTPConnection(HOSTPORT)
    conn.request(method, path, body=body, headers={**headers, "authorization": auth, "content-length": str(len(body))})
    res = conn.getresponse()
    return res.status, res.read()


def chunked_put(key_name, mode, data, tamper=False, bad_trailer=False):
    headers = {
        "x-amz-content-sha256": mode,
        "x-amz-decoded-content-length": str(len(data)),
        "content-encoding": "aws-chunked",
    }
    if "TRAILER" in mode:
        headers["x-amz-trailer"] = "x-amz-checksum-crc32"

    def body(key, amz, scope, seed):
        out, previous = b"", seed
        pieces = [data[i : i + 65536] for i in range(0, len(data), 65536)] + [b""]
        for n, piece in enumerate(pieces):
            if mode == "STREAMING-AWS4-HMAC-SHA256-PAYLOAD":
                text = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", amz, scope, previous, sha(b""), sha(piece)])
                previous = hmac.new(key, text.encode(), hashlib.sha256).hexdigest()
                sent = bytes([piece[0] ^ 1]) + piece[1:] if tamper and n == 1 and piece else piece
                out += f"{len(piece):x};chunk-signature={previous}\r\n".encode() + sent + b"\r\n"
            else:
                out += f"{len(piece):x}\r\n".encode() + piece + (b"\r\n" if piece else b"")
        if "TRAILER" in mode:
            crc = zlib.crc32(b"not the data" if bad_trailer else data).to_bytes(4, "big")
            out += b"x-amz-checksum-crc32:" + base64.b64encode(crc) + b"\r\n\r\n"
        return out

    return request("PUT", f"/{BUCKET}/{key_name}", headers, body)


def get(key_name):
    return request("GET", f"/{BUCKET}/{key_name}", {"x-amz-content-sha256": "UNSIGNED-PAYLOAD"})


def main():
    data = bytes((i * 7 + 3) % 251 for i in range(300_000))
    cases = [
        ("signed", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", {}, True),
        ("signed-tampered", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", {"tamper": True}, False),
        ("trailer", "STREAMING-UNSIGNED-PAYLOAD-TRAILER", {}, True),
        ("trailer-bad-crc", "STREAMING-UNSIGNED-PAYLOAD-TRAILER", {"bad_trailer": True}, False),
    ]
    failed = False
    for name, mode, opts, should_store in cases:
        status, body = chunked_put(name, mode, data, **opts)
        got_status, got = get(name)
        stored = got_status == 200 and got == data
        print(name, status, "stored" if stored else f"absent({got_status})", body[:160])
        if should_store != stored or (should_store and status != 200) or (not should_store and status < 400):
            failed = True
        if name == "trailer-bad-crc" and b"BadDigest" not in body:
            print("expected BadDigest for a wrong trailer checksum")
            failed = True
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
