#!/usr/bin/env python3
"""Open N PostgreSQL client connections, log each one in, then hold them idle.

Used by bench/postgres/run.sh to measure a proxy's memory per idle client. Standard library
only. Each connection sends a StartupMessage (after an SSLRequest with --tls), answers the
server's authentication request (cleartext, MD5 or SCRAM-SHA-256) with --password, and waits
for ReadyForQuery. When every connection has finished (or failed), one line is printed:

    READY ok=9998 failed=2 seconds=4.1 first_error=...

and the connections are held until SIGTERM/SIGINT, stdin reaching EOF (with --until-eof), or
--hold seconds have passed.
"""

import argparse
import asyncio
import base64
import hashlib
import hmac
import os
import signal
import ssl
import struct
import sys
import time

SSL_REQUEST = struct.pack("!ii", 8, 80877103)
PROTOCOL_3 = 196608


class LoginError(Exception):
    pass


def message(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


def startup(user: str, database: str) -> bytes:
    params = b""
    for k, v in (("user", user), ("database", database), ("application_name", "idle_clients")):
        params += k.encode() + b"\0" + v.encode() + b"\0"
    body = struct.pack("!i", PROTOCOL_3) + params + b"\0"
    return struct.pack("!i", len(body) + 4) + body


def error_text(body: bytes) -> str:
    fields = {}
    for part in body.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode(errors="replace")
    return f"{fields.get('S', 'ERROR')} {fields.get('C', '')}: {fields.get('M', '')}"


# Salted passwords by (salt, iterations): PBKDF2 with 4096 rounds per login would make the
# client, not the proxy, the bottleneck when the server reuses one verifier.
_salted_cache: dict = {}


def salted_password(password: bytes, salt: bytes, iterations: int) -> bytes:
    key = (salt, iterations)
    v = _salted_cache.get(key)
    if v is None:
        v = hashlib.pbkdf2_hmac("sha256", password, salt, iterations)
        if len(_salted_cache) < 1024:
            _salted_cache[key] = v
    return v


class Scram:
    """Client side of SCRAM-SHA-256 (RFC 5802/7677) without channel binding."""

    def __init__(self, password: str):
        self.password = password.encode()
        self.nonce = base64.b64encode(os.urandom(18)).decode()
        self.first_bare = "n=,r=" + self.nonce
        self.server_signature = b""

    def client_first(self) -> bytes:
        return ("n,," + self.first_bare).encode()

    def client_final(self, server_first: bytes) -> bytes:
        text = server_first.decode()
        attrs = dict(a.split("=", 1) for a in text.split(","))
        nonce, salt, iters = attrs["r"], base64.b64decode(attrs["s"]), int(attrs["i"])
        if not nonce.startswith(self.nonce):
            raise LoginError("SCRAM: server nonce does not extend ours")
        salted = salted_password(self.password, salt, iters)
        client_key = hmac.digest(salted, b"Client Key", "sha256")
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = "c=biws,r=" + nonce
        auth_message = ",".join((self.first_bare, text, without_proof)).encode()
        signature = hmac.digest(stored_key, auth_message, "sha256")
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        server_key = hmac.digest(salted, b"Server Key", "sha256")
        self.server_signature = hmac.digest(server_key, auth_message, "sha256")
        return (without_proof + ",p=" + base64.b64encode(proof).decode()).encode()

    def check_final(self, server_final: bytes) -> None:
        attrs = dict(a.split("=", 1) for a in server_final.decode().split(",") if "=" in a)
        if "e" in attrs:
            raise LoginError("SCRAM: server error " + attrs["e"])
        if base64.b64decode(attrs.get("v", "")) != self.server_signature:
            raise LoginError("SCRAM: wrong server signature")


async def read_message(reader: asyncio.StreamReader):
    head = await reader.readexactly(5)
    kind, length = head[:1], struct.unpack("!i", head[1:])[0]
    body = await reader.readexactly(length - 4) if length > 4 else b""
    return kind, body


async def login(args, ctx):
    reader, writer = await asyncio.open_connection(args.host, args.port)
    try:
        if ctx is not None:
            writer.write(SSL_REQUEST)
            await writer.drain()
            answer = await reader.readexactly(1)
            if answer != b"S":
                raise LoginError(f"server refused TLS ({answer!r})")
            await writer.start_tls(ctx, server_hostname=args.sni)
        writer.write(startup(args.user, args.database))
        await writer.drain()
        scram = None
        while True:
            kind, body = await read_message(reader)
            if kind == b"R":
                code = struct.unpack("!i", body[:4])[0]
                if code == 0:
                    continue
                if code == 3:
                    writer.write(message(b"p", args.password.encode() + b"\0"))
                elif code == 5:
                    inner = hashlib.md5(args.password.encode() + args.user.encode()).hexdigest()
                    outer = hashlib.md5(inner.encode() + body[4:8]).hexdigest()
                    writer.write(message(b"p", b"md5" + outer.encode() + b"\0"))
                elif code == 10:
                    mechs = [m.decode() for m in body[4:].split(b"\0") if m]
                    if "SCRAM-SHA-256" not in mechs:
                        raise LoginError(f"no supported SASL mechanism in {mechs}")
                    scram = Scram(args.password)
                    first = scram.client_first()
                    writer.write(message(b"p", b"SCRAM-SHA-256\0" + struct.pack("!i", len(first)) + first))
                elif code == 11 and scram is not None:
                    writer.write(message(b"p", scram.client_final(body[4:])))
                elif code == 12 and scram is not None:
                    scram.check_final(body[4:])
                    continue
                else:
                    raise LoginError(f"unsupported authentication request {code}")
                await writer.drain()
            elif kind == b"E":
                raise LoginError(error_text(body))
            elif kind == b"Z":
                return reader, writer
            # S (ParameterStatus), K (BackendKeyData), N (NoticeResponse): nothing to do.
    except BaseException:
        writer.close()
        raise


async def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--user", default="bench")
    p.add_argument("--database", default="bench")
    p.add_argument("--password", default=os.environ.get("PGPASSWORD", ""))
    p.add_argument("--tls", action="store_true", help="SSLRequest, then TLS (no certificate check)")
    p.add_argument("--sni", default="localhost")
    p.add_argument("-n", "--count", type=int, default=10000)
    p.add_argument("--concurrency", type=int, default=128, help="logins in flight at once")
    p.add_argument("--timeout", type=float, default=30.0, help="per login")
    p.add_argument("--hold", type=float, default=600.0, help="longest time to hold, seconds")
    p.add_argument("--until-eof", action="store_true", help="also stop when stdin closes")
    args = p.parse_args()

    ctx = None
    if args.tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE

    gate = asyncio.Semaphore(args.concurrency)
    held = []
    errors = []

    async def one():
        async with gate:
            try:
                held.append(await asyncio.wait_for(login(args, ctx), args.timeout))
            except Exception as e:  # noqa: BLE001 - every failure is counted and reported
                errors.append(f"{type(e).__name__}: {e}")

    t0 = time.monotonic()
    await asyncio.gather(*(one() for _ in range(args.count)))
    took = time.monotonic() - t0
    first = errors[0].replace("\n", " ") if errors else ""
    print(f"READY ok={len(held)} failed={len(errors)} seconds={took:.1f} first_error={first}", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.until_eof:
        loop.add_reader(sys.stdin.fileno(), lambda: sys.stdin.buffer.read1(65536) or stop.set())
    try:
        await asyncio.wait_for(stop.wait(), args.hold)
    except asyncio.TimeoutError:
        pass
    for _, w in held:
        w.close()
    return 0 if held else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
