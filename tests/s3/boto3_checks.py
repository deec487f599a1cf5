#!/usr/bin/env python3
"""boto3 against a running DistStore node, for tests/s3.rs.

Usage: boto3_checks.py CHECK...   (each CHECK is a function below without its `check_` prefix)

The node comes from the environment: S3_ENDPOINT (http://127.0.0.1:PORT), S3_ACCESS_KEY,
S3_SECRET_KEY; `second_key` also needs S3_ACCESS_KEY2 / S3_SECRET_KEY2 (a key made through the
admin API). Each check uses buckets of its own, asserts what an S3 user relies on, prints
`ok CHECK` when it passes, and exits non-zero with the reason when it does not.
"""

import base64
import hashlib
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

ENDPOINT = os.environ["S3_ENDPOINT"]
MIB = 1024 * 1024


def client(access_key=None, secret_key=None, attempts=1):
    return boto3.client(
        "s3",
        endpoint_url=ENDPOINT,
        aws_access_key_id=access_key or os.environ["S3_ACCESS_KEY"],
        aws_secret_access_key=secret_key or os.environ["S3_SECRET_KEY"],
        region_name="us-east-1",
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"max_attempts": attempts, "mode": "standard"},
            connect_timeout=10,
            read_timeout=60,
        ),
    )


def data(n, seed):
    """Deterministic bytes that do not compress or deduplicate."""
    out = bytearray()
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(b"%d/%d" % (seed, counter)).digest()
        counter += 1
    return bytes(out[:n])


def md5_hex(b):
    return hashlib.md5(b).hexdigest()


def b64(digest):
    return base64.b64encode(digest).decode()


def crc32c(b):
    """CRC-32C (Castagnoli), as S3's x-amz-checksum-crc32c: botocore needs awscrt for it."""
    table = crc32c.table
    if table is None:
        table = []
        for i in range(256):
            c = i
            for _ in range(8):
                c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
            table.append(c)
        crc32c.table = table
    crc = 0xFFFFFFFF
    for byte in b:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


crc32c.table = None


def checksums(b):
    """The base64 checksum values S3 expects, by algorithm."""
    return {
        "CRC32": b64(zlib.crc32(b).to_bytes(4, "big")),
        "CRC32C": b64(crc32c(b).to_bytes(4, "big")),
        "SHA1": b64(hashlib.sha1(b).digest()),
        "SHA256": b64(hashlib.sha256(b).digest()),
    }


def expect_error(code, status, fn, *args, **kwargs):
    """Calls fn and demands an S3 error with this code and HTTP status."""
    try:
        fn(*args, **kwargs)
    except ClientError as e:
        got = e.response.get("Error", {}).get("Code")
        got_status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        assert (got, got_status) == (code, status), f"expected {code} ({status}), got {got} ({got_status}): {e}"
        return e
    raise AssertionError(f"expected {code} ({status}); the call succeeded")


def body_of(s3, bucket, key, **kwargs):
    return s3.get_object(Bucket=bucket, Key=key, **kwargs)["Body"].read()


def absent(s3, bucket, key):
    expect_error("404", 404, s3.head_object, Bucket=bucket, Key=key)


def fetch(url, method="GET", body=None):
    """An HTTP request without any signing of ours: (status, headers, body)."""
    req = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as res:
            return res.status, res.headers, res.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def xml_code(body):
    text = body.decode(errors="replace")
    start = text.find("<Code>")
    end = text.find("</Code>")
    return text[start + 6 : end] if start >= 0 and end > start else f"(no Code in {text!r})"


# --- checks ---------------------------------------------------------------------------------


def check_presigned():
    s3 = client()
    s3.create_bucket(Bucket="presign")
    payload = data(3000, 1)
    s3.put_object(Bucket="presign", Key="doc.bin", Body=payload)

    url = s3.generate_presigned_url("get_object", Params={"Bucket": "presign", "Key": "doc.bin"}, ExpiresIn=300)
    status, _, got = fetch(url)
    assert status == 200 and got == payload, f"presigned GET: {status} {got[:300]!r}"

    url = s3.generate_presigned_url("head_object", Params={"Bucket": "presign", "Key": "doc.bin"}, ExpiresIn=300)
    status, headers, _ = fetch(url, method="HEAD")
    assert status == 200, f"presigned HEAD: {status}"
    assert headers["Content-Length"] == str(len(payload)), headers
    assert headers["ETag"].strip('"') == md5_hex(payload), headers["ETag"]

    put_body = data(2000, 2)
    url = s3.generate_presigned_url("put_object", Params={"Bucket": "presign", "Key": "up.bin"}, ExpiresIn=300)
    status, _, answer = fetch(url, method="PUT", body=put_body)
    assert status == 200, f"presigned PUT: {status} {answer!r}"
    assert body_of(s3, "presign", "up.bin") == put_body

    # A URL signed for one key does not open another.
    tampered = url.replace("/up.bin", "/doc.bin")
    status, _, answer = fetch(tampered)
    assert status == 403 and xml_code(answer) == "SignatureDoesNotMatch", (status, answer)

    # Expiry is checked: a URL valid for one second, used after it lapsed.
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "presign", "Key": "doc.bin"}, ExpiresIn=1)
    put_url = s3.generate_presigned_url("put_object", Params={"Bucket": "presign", "Key": "late.bin"}, ExpiresIn=1)
    time.sleep(2.5)  # not waiting for anything to settle: the URL's clock must run out
    status, _, answer = fetch(url)
    assert status == 403 and xml_code(answer) == "AccessDenied", (status, answer)
    status, _, answer = fetch(put_url, method="PUT", body=b"too late")
    assert status == 403 and xml_code(answer) == "AccessDenied", (status, answer)
    absent(s3, "presign", "late.bin")

    # No signature at all.
    status, _, answer = fetch(f"{ENDPOINT}/presign/doc.bin")
    assert status == 403 and xml_code(answer) == "AccessDenied", (status, answer)


def check_checksums():
    s3 = client()
    s3.create_bucket(Bucket="sums")
    computed = {"CRC32", "SHA1", "SHA256"}
    try:
        import awscrt  # noqa: F401  (botocore computes CRC32C only with it)

        computed.add("CRC32C")
    except ImportError:
        pass
    for i, algorithm in enumerate(["CRC32", "CRC32C", "SHA1", "SHA256"]):
        payload = data(5000 + i, 10 + i)
        want = checksums(payload)[algorithm]
        field = "Checksum" + algorithm
        # boto3 computing it (ChecksumAlgorithm), where botocore can.
        if algorithm in computed:
            key = f"algo-{algorithm}"
            res = s3.put_object(Bucket="sums", Key=key, Body=payload, ChecksumAlgorithm=algorithm)
            assert res.get(field) == want, f"{algorithm}: answered {res.get(field)}, want {want}"
            assert res["ETag"].strip('"') == md5_hex(payload)
            assert body_of(s3, "sums", key) == payload
        # The value given by the caller.
        key = f"given-{algorithm}"
        res = s3.put_object(Bucket="sums", Key=key, Body=payload, **{field: want})
        assert res["ETag"].strip('"') == md5_hex(payload)
        assert body_of(s3, "sums", key) == payload
        # A wrong value: BadDigest, and nothing stored.
        wrong = checksums(payload + b"x")[algorithm]
        key = f"wrong-{algorithm}"
        expect_error("BadDigest", 400, s3.put_object, Bucket="sums", Key=key, Body=payload, **{field: wrong})
        absent(s3, "sums", key)
    # A wrong checksum does not replace what is there either.
    old = data(100, 30)
    s3.put_object(Bucket="sums", Key="keep", Body=old)
    expect_error(
        "BadDigest", 400, s3.put_object, Bucket="sums", Key="keep", Body=b"new", ChecksumCRC32=checksums(b"other")["CRC32"]
    )
    assert body_of(s3, "sums", "keep") == old
    # Content-MD5 through boto3: good, then wrong.
    s3.put_object(Bucket="sums", Key="md5", Body=b"hello", ContentMD5=b64(hashlib.md5(b"hello").digest()))
    expect_error(
        "BadDigest", 400, s3.put_object, Bucket="sums", Key="md5", Body=b"HELLO", ContentMD5=b64(hashlib.md5(b"x").digest())
    )
    assert body_of(s3, "sums", "md5") == b"hello"


def check_copy():
    s3 = client()
    s3.create_bucket(Bucket="copies")
    s3.create_bucket(Bucket="copies-dst")
    payload = data(4000, 40)
    s3.put_object(
        Bucket="copies", Key="src", Body=payload, ContentType="text/csv", Metadata={"color": "blue"}, CacheControl="max-age=9"
    )
    src_etag = md5_hex(payload)

    # COPY (the default): metadata and headers come along; across buckets too.
    res = s3.copy_object(Bucket="copies-dst", Key="copied", CopySource={"Bucket": "copies", "Key": "src"})
    assert res["CopyObjectResult"]["ETag"].strip('"') == src_etag
    head = s3.head_object(Bucket="copies-dst", Key="copied")
    assert head["Metadata"].get("color") == "blue", head["Metadata"]
    assert head["ContentType"] == "text/csv", head["ContentType"]
    assert head.get("CacheControl") == "max-age=9", head.get("CacheControl")
    assert head["ETag"].strip('"') == src_etag
    assert body_of(s3, "copies-dst", "copied") == payload

    # REPLACE: only the new metadata.
    s3.copy_object(
        Bucket="copies",
        Key="replaced",
        CopySource={"Bucket": "copies", "Key": "src"},
        MetadataDirective="REPLACE",
        Metadata={"shape": "round"},
        ContentType="application/json",
    )
    head = s3.head_object(Bucket="copies", Key="replaced")
    assert head["Metadata"].get("shape") == "round" and "color" not in head["Metadata"], head["Metadata"]
    assert head["ContentType"] == "application/json", head["ContentType"]
    assert head.get("CacheControl") is None, head.get("CacheControl")
    assert body_of(s3, "copies", "replaced") == payload

    # Onto itself: refused without REPLACE, allowed with it (how clients change metadata).
    expect_error("InvalidRequest", 400, s3.copy_object, Bucket="copies", Key="src", CopySource={"Bucket": "copies", "Key": "src"})
    s3.copy_object(
        Bucket="copies",
        Key="src",
        CopySource={"Bucket": "copies", "Key": "src"},
        MetadataDirective="REPLACE",
        Metadata={"color": "red"},
        ContentType="text/plain",
    )
    head = s3.head_object(Bucket="copies", Key="src")
    assert head["Metadata"].get("color") == "red", head["Metadata"]
    assert head["ContentType"] == "text/plain", head["ContentType"]
    assert body_of(s3, "copies", "src") == payload

    # The source object is untouched by copies out of it; a missing source is NoSuchKey.
    expect_error("NoSuchKey", 404, s3.copy_object, Bucket="copies", Key="x", CopySource={"Bucket": "copies", "Key": "nope"})
    absent(s3, "copies", "x")


def check_listing():
    s3 = client()
    s3.create_bucket(Bucket="lists")
    keys = ["a/1", "a/2", "a/b/3", "b/1", "c", "d e", "f+g&h", "z/\u00fc"]
    for k in keys:
        s3.put_object(Bucket="lists", Key=k, Body=k.encode())

    def all_keys(**kwargs):
        res = s3.list_objects_v2(Bucket="lists", **kwargs)
        return [o["Key"] for o in res.get("Contents", [])], [p["Prefix"] for p in res.get("CommonPrefixes", [])], res

    got, prefixes, res = all_keys()
    assert got == sorted(keys), got
    assert res["KeyCount"] == len(keys), res["KeyCount"]

    got, prefixes, _ = all_keys(Delimiter="/")
    assert got == ["c", "d e", "f+g&h"], got
    assert prefixes == ["a/", "b/", "z/"], prefixes

    got, prefixes, _ = all_keys(Prefix="a/", Delimiter="/")
    assert got == ["a/1", "a/2"] and prefixes == ["a/b/"], (got, prefixes)

    got, _, _ = all_keys(StartAfter="b/1")
    assert got == ["c", "d e", "f+g&h", "z/\u00fc"], got

    # MaxKeys paging with continuation tokens: every key once, in order.
    seen, token, pages = [], None, 0
    while True:
        kwargs = {"MaxKeys": 3}
        if token:
            kwargs["ContinuationToken"] = token
        res = s3.list_objects_v2(Bucket="lists", **kwargs)
        pages += 1
        assert res["KeyCount"] <= 3, res["KeyCount"]
        seen += [o["Key"] for o in res.get("Contents", [])]
        if not res["IsTruncated"]:
            break
        token = res["NextContinuationToken"]
        assert pages < 10, "paging does not end"
    assert seen == sorted(keys), seen
    assert pages == 3, pages

    # The paginator, as most applications list.
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket="lists", PaginationConfig={"PageSize": 2})
    assert [o["Key"] for p in pages for o in p.get("Contents", [])] == sorted(keys)

    # EncodingType=url asked for explicitly: the keys come percent-encoded (boto3 decodes them
    # only when it set the parameter itself, as it does on every listing above).
    raw = {}

    def keep_raw(http_response, **_):
        raw["xml"] = http_response.content.decode()

    s3.meta.events.register("after-call.s3.ListObjectsV2", keep_raw)
    got, _, res = all_keys(EncodingType="url")
    s3.meta.events.unregister("after-call.s3.ListObjectsV2", keep_raw)
    assert res.get("EncodingType") == "url", res.get("EncodingType")
    assert [urllib.parse.unquote_plus(k) for k in got] == sorted(keys), got
    assert "<Key>f%2Bg%26h</Key>" in raw["xml"], raw["xml"]
    assert "<Key>z/%C3%BC</Key>" in raw["xml"], raw["xml"]

    # ListObjects (v1) with a marker.
    res = s3.list_objects(Bucket="lists", Marker="c")
    assert [o["Key"] for o in res.get("Contents", [])] == ["d e", "f+g&h", "z/\u00fc"]

    # Paging with a delimiter: common prefixes count toward MaxKeys and come once.
    seen, token = [], None
    for _ in range(12):
        kwargs = {"MaxKeys": 1, "Delimiter": "/"}
        if token:
            kwargs["ContinuationToken"] = token
        res = s3.list_objects_v2(Bucket="lists", **kwargs)
        seen += [o["Key"] for o in res.get("Contents", [])] + [p["Prefix"] for p in res.get("CommonPrefixes", [])]
        if not res["IsTruncated"]:
            break
        token = res["NextContinuationToken"]
    assert seen == ["a/", "b/", "c", "d e", "f+g&h", "z/"], seen

    # The same with ListObjects (v1): NextMarker after a common prefix skips all under it.
    seen, marker = [], ""
    for _ in range(12):
        res = s3.list_objects(Bucket="lists", MaxKeys=1, Delimiter="/", Marker=marker)
        seen += [o["Key"] for o in res.get("Contents", [])] + [p["Prefix"] for p in res.get("CommonPrefixes", [])]
        if not res["IsTruncated"]:
            break
        marker = res["NextMarker"]
    assert seen == ["a/", "b/", "c", "d e", "f+g&h", "z/"], seen


def check_delete_objects():
    s3 = client()
    s3.create_bucket(Bucket="deletes")
    for k in ["k1", "k2", "k3", "k4"]:
        s3.put_object(Bucket="deletes", Key=k, Body=k.encode())
    res = s3.delete_objects(Bucket="deletes", Delete={"Objects": [{"Key": "k1"}, {"Key": "k2"}, {"Key": "never-was"}]})
    assert sorted(d["Key"] for d in res.get("Deleted", [])) == ["k1", "k2", "never-was"], res
    assert not res.get("Errors"), res.get("Errors")
    res = s3.delete_objects(Bucket="deletes", Delete={"Objects": [{"Key": "k3"}], "Quiet": True})
    assert not res.get("Deleted"), res
    assert not res.get("Errors"), res.get("Errors")
    left = [o["Key"] for o in s3.list_objects_v2(Bucket="deletes").get("Contents", [])]
    assert left == ["k4"], left
    s3.delete_object(Bucket="deletes", Key="k4")
    s3.delete_object(Bucket="deletes", Key="k4")  # deleting what is gone succeeds
    assert s3.list_objects_v2(Bucket="deletes")["KeyCount"] == 0


def check_multipart():
    s3 = client()
    s3.create_bucket(Bucket="parts")
    sizes = [5 * MIB, 5 * MIB, 1234]
    pieces = [data(n, 50 + i) for i, n in enumerate(sizes)]
    up = s3.create_multipart_upload(
        Bucket="parts", Key="big.bin", ContentType="application/x-test", Metadata={"kind": "multi"}
    )["UploadId"]
    listed = s3.list_multipart_uploads(Bucket="parts")
    assert [(u["Key"], u["UploadId"]) for u in listed.get("Uploads", [])] == [("big.bin", up)], listed
    etags = []
    for n, piece in enumerate(pieces, start=1):
        res = s3.upload_part(Bucket="parts", Key="big.bin", UploadId=up, PartNumber=n, Body=piece)
        assert res["ETag"].strip('"') == md5_hex(piece), (n, res["ETag"])
        etags.append(res["ETag"])
    listed = s3.list_parts(Bucket="parts", Key="big.bin", UploadId=up)
    assert [(p["PartNumber"], p["Size"], p["ETag"]) for p in listed["Parts"]] == list(
        zip([1, 2, 3], sizes, etags)
    ), listed["Parts"]
    parts = [{"PartNumber": n, "ETag": e} for n, e in zip([1, 2, 3], etags)]

    # Wrong completions change nothing: the upload stays, no object appears.
    expect_error(
        "InvalidPartOrder", 400, s3.complete_multipart_upload, Bucket="parts", Key="big.bin", UploadId=up,
        MultipartUpload={"Parts": [parts[1], parts[0], parts[2]]},
    )
    expect_error(
        "InvalidPart", 400, s3.complete_multipart_upload, Bucket="parts", Key="big.bin", UploadId=up,
        MultipartUpload={"Parts": [parts[0], {"PartNumber": 2, "ETag": '"' + "0" * 32 + '"'}, parts[2]]},
    )
    expect_error(
        "InvalidPart", 400, s3.complete_multipart_upload, Bucket="parts", Key="big.bin", UploadId=up,
        MultipartUpload={"Parts": parts[:2] + [{"PartNumber": 7, "ETag": etags[2]}]},
    )
    absent(s3, "parts", "big.bin")
    assert len(s3.list_parts(Bucket="parts", Key="big.bin", UploadId=up)["Parts"]) == 3

    res = s3.complete_multipart_upload(Bucket="parts", Key="big.bin", UploadId=up, MultipartUpload={"Parts": parts})
    want = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in pieces)).hexdigest() + "-3"
    assert res["ETag"].strip('"') == want, (res["ETag"], want)
    head = s3.head_object(Bucket="parts", Key="big.bin")
    assert head["ETag"].strip('"') == want, head["ETag"]
    assert head["ContentLength"] == sum(sizes)
    assert head["ContentType"] == "application/x-test", head["ContentType"]
    assert head["Metadata"].get("kind") == "multi", head["Metadata"]
    whole = b"".join(pieces)
    assert body_of(s3, "parts", "big.bin") == whole
    # A range across the first part boundary.
    got = body_of(s3, "parts", "big.bin", Range=f"bytes={5 * MIB - 10}-{5 * MIB + 9}")
    assert got == whole[5 * MIB - 10 : 5 * MIB + 10]
    # Completed: the upload is gone.
    expect_error("NoSuchUpload", 404, s3.list_parts, Bucket="parts", Key="big.bin", UploadId=up)
    assert not s3.list_multipart_uploads(Bucket="parts").get("Uploads")

    # A part below 5 MiB that is not the last: EntityTooSmall.
    small = s3.create_multipart_upload(Bucket="parts", Key="small.bin")["UploadId"]
    small_parts = []
    for n in (1, 2):
        e = s3.upload_part(Bucket="parts", Key="small.bin", UploadId=small, PartNumber=n, Body=data(1024, 60 + n))["ETag"]
        small_parts.append({"PartNumber": n, "ETag": e})
    expect_error(
        "EntityTooSmall", 400, s3.complete_multipart_upload, Bucket="parts", Key="small.bin", UploadId=small,
        MultipartUpload={"Parts": small_parts},
    )
    absent(s3, "parts", "small.bin")
    # A part number out of range.
    expect_error("InvalidArgument", 400, s3.upload_part, Bucket="parts", Key="small.bin", UploadId=small, PartNumber=10001, Body=b"x")

    # Abort: the upload leaves the listing and its parts are gone.
    assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket="parts").get("Uploads", [])] == [small]
    s3.abort_multipart_upload(Bucket="parts", Key="small.bin", UploadId=small)
    assert not s3.list_multipart_uploads(Bucket="parts").get("Uploads")
    expect_error("NoSuchUpload", 404, s3.list_parts, Bucket="parts", Key="small.bin", UploadId=small)
    expect_error(
        "NoSuchUpload", 404, s3.complete_multipart_upload, Bucket="parts", Key="small.bin", UploadId=small,
        MultipartUpload={"Parts": small_parts},
    )
    absent(s3, "parts", "small.bin")
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="parts").get("Contents", [])] == ["big.bin"]


def check_metadata():
    s3 = client()
    s3.create_bucket(Bucket="meta")
    payload = data(777, 70)
    disposition = 'attachment; filename="report.csv"'
    s3.put_object(
        Bucket="meta",
        Key="r.csv",
        Body=payload,
        ContentType="text/csv",
        ContentDisposition=disposition,
        CacheControl="max-age=60, public",
        Metadata={"color": "blue", "Mixed-Case": "Value With Spaces"},
    )
    for res in (s3.head_object(Bucket="meta", Key="r.csv"), s3.get_object(Bucket="meta", Key="r.csv")):
        assert res["ContentType"] == "text/csv", res["ContentType"]
        assert res.get("ContentDisposition") == disposition, res.get("ContentDisposition")
        assert res.get("CacheControl") == "max-age=60, public", res.get("CacheControl")
        assert res["Metadata"].get("color") == "blue", res["Metadata"]
        assert res["Metadata"].get("mixed-case") == "Value With Spaces", res["Metadata"]
        assert res["ContentLength"] == len(payload)
        assert res["ETag"].strip('"') == md5_hex(payload)
    # Overwriting replaces the metadata as well as the bytes.
    s3.put_object(Bucket="meta", Key="r.csv", Body=b"new")
    head = s3.head_object(Bucket="meta", Key="r.csv")
    assert "color" not in head["Metadata"], head["Metadata"]
    assert head.get("ContentDisposition") is None, head.get("ContentDisposition")


def check_conditionals():
    s3 = client()
    s3.create_bucket(Bucket="conds")
    payload = data(1000, 80)
    etag = s3.put_object(Bucket="conds", Key="o", Body=payload)["ETag"]
    assert etag.strip('"') == md5_hex(payload), "a single-part ETag is the hex MD5 of the bytes"

    res = s3.get_object(Bucket="conds", Key="o", Range="bytes=10-19")
    assert res["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert res["Body"].read() == payload[10:20]
    assert res["ContentRange"] == f"bytes 10-19/{len(payload)}", res["ContentRange"]
    assert body_of(s3, "conds", "o", Range="bytes=-5") == payload[-5:]
    assert body_of(s3, "conds", "o", Range="bytes=995-") == payload[995:]
    assert body_of(s3, "conds", "o", Range="bytes=990-5000") == payload[990:]
    expect_error("InvalidRange", 416, s3.get_object, Bucket="conds", Key="o", Range="bytes=1000-1005")

    expect_error("304", 304, s3.get_object, Bucket="conds", Key="o", IfNoneMatch=etag)
    expect_error("PreconditionFailed", 412, s3.get_object, Bucket="conds", Key="o", IfMatch='"' + "f" * 32 + '"')
    assert body_of(s3, "conds", "o", IfMatch=etag) == payload
    assert body_of(s3, "conds", "o", IfNoneMatch='"' + "f" * 32 + '"') == payload
    last = s3.head_object(Bucket="conds", Key="o")["LastModified"]
    expect_error("304", 304, s3.get_object, Bucket="conds", Key="o", IfModifiedSince=last)
    expect_error(
        "PreconditionFailed", 412, s3.get_object, Bucket="conds", Key="o",
        IfUnmodifiedSince=last.replace(year=last.year - 1),
    )
    expect_error("304", 304, s3.head_object, Bucket="conds", Key="o", IfNoneMatch=etag)
    expect_error("412", 412, s3.head_object, Bucket="conds", Key="o", IfMatch='"' + "f" * 32 + '"')


def check_errors():
    s3 = client()
    expect_error("NoSuchBucket", 404, s3.get_object, Bucket="no-such-bucket", Key="k")
    expect_error("NoSuchBucket", 404, s3.put_object, Bucket="no-such-bucket", Key="k", Body=b"x")
    expect_error("NoSuchBucket", 404, s3.list_objects_v2, Bucket="no-such-bucket")
    expect_error("404", 404, s3.head_bucket, Bucket="no-such-bucket")
    s3.create_bucket(Bucket="errs")
    expect_error("BucketAlreadyOwnedByYou", 409, s3.create_bucket, Bucket="errs")
    expect_error("NoSuchKey", 404, s3.get_object, Bucket="errs", Key="missing")
    s3.put_object(Bucket="errs", Key="k", Body=b"x")
    expect_error("BucketNotEmpty", 409, s3.delete_bucket, Bucket="errs")
    assert body_of(s3, "errs", "k") == b"x"

    wrong = client(secret_key="not-the-secret-key-at-all")
    expect_error("SignatureDoesNotMatch", 403, wrong.list_buckets)
    expect_error("SignatureDoesNotMatch", 403, wrong.put_object, Bucket="errs", Key="k", Body=b"evil")
    unknown = client(access_key="AKNOBODYHASTHISKEY00", secret_key="whatever-secret-value")
    expect_error("InvalidAccessKeyId", 403, unknown.list_buckets)
    expect_error("InvalidAccessKeyId", 403, unknown.delete_object, Bucket="errs", Key="k")
    assert body_of(s3, "errs", "k") == b"x"

    s3.delete_object(Bucket="errs", Key="k")
    s3.delete_bucket(Bucket="errs")
    expect_error("404", 404, s3.head_bucket, Bucket="errs")
    assert "errs" not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def check_second_key():
    root = client()
    other = client(os.environ["S3_ACCESS_KEY2"], os.environ["S3_SECRET_KEY2"])
    root.create_bucket(Bucket="roots")
    root.put_object(Bucket="roots", Key="secret.txt", Body=b"root only")
    other.create_bucket(Bucket="others")
    other.put_object(Bucket="others", Key="mine.txt", Body=b"mine")

    assert [b["Name"] for b in other.list_buckets()["Buckets"]] == ["others"]
    assert {"roots", "others"} <= {b["Name"] for b in root.list_buckets()["Buckets"]}
    expect_error("AccessDenied", 403, other.list_objects_v2, Bucket="roots")
    expect_error("AccessDenied", 403, other.get_object, Bucket="roots", Key="secret.txt")
    expect_error("403", 403, other.head_object, Bucket="roots", Key="secret.txt")
    expect_error("AccessDenied", 403, other.put_object, Bucket="roots", Key="planted", Body=b"x")
    expect_error("AccessDenied", 403, other.delete_object, Bucket="roots", Key="secret.txt")
    expect_error("AccessDenied", 403, other.delete_bucket, Bucket="roots")
    expect_error(
        "AccessDenied", 403, other.copy_object, Bucket="others", Key="stolen", CopySource={"Bucket": "roots", "Key": "secret.txt"}
    )
    expect_error("BucketAlreadyExists", 409, other.create_bucket, Bucket="roots")
    absent(other, "others", "stolen")
    assert [o["Key"] for o in root.list_objects_v2(Bucket="roots")["Contents"]] == ["secret.txt"]
    assert body_of(root, "roots", "secret.txt") == b"root only"
    # The root key sees everything.
    assert body_of(root, "others", "mine.txt") == b"mine"


def check_cluster_multipart():
    """Uploads S3_FILE in PART_SIZE parts, printing `part N` after each so the test can kill
    a node meanwhile; ends with `completed ETAG` or `failed CODE: message` (exit 3)."""
    s3 = client(attempts=3)
    bucket, key, path = os.environ["S3_BUCKET"], os.environ["S3_KEY"], os.environ["S3_FILE"]
    part_size = int(os.environ["PART_SIZE"])
    with open(path, "rb") as f:
        whole = f.read()
    try:
        up = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        parts = []
        for n, start in enumerate(range(0, len(whole), part_size), start=1):
            res = s3.upload_part(Bucket=bucket, Key=key, UploadId=up, PartNumber=n, Body=whole[start : start + part_size])
            parts.append({"PartNumber": n, "ETag": res["ETag"]})
            print(f"part {n}", flush=True)
        res = s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=up, MultipartUpload={"Parts": parts})
    except ClientError as e:
        print(f"failed {e.response.get('Error', {}).get('Code')}: {e}", flush=True)
        sys.exit(3)
    except Exception as e:  # a dropped connection: the client saw the failure
        print(f"failed {type(e).__name__}: {e}", flush=True)
        sys.exit(3)
    print(f"completed {res['ETag'].strip(chr(34))}", flush=True)


def main():
    names = sys.argv[1:]
    if not names:
        sys.exit(__doc__)
    for name in names:
        check = globals().get("check_" + name)
        if check is None:
            sys.exit(f"no check named {name}")
        check()
        if name != "cluster_multipart":
            print(f"ok {name}", flush=True)


if __name__ == "__main__":
    main()
