#!/usr/bin/env python3
"""Seed inputs for the fuzz targets, in each target's input format.

Usage: fuzz/seeds.py DUMP OUT
DUMP holds real inputs taken from the testkit Harness and str0m clients:
sdp/*.sdp (offers) and dg/*.bin (datagrams: peerN-* sent by peer N,
shard-* sent by the shard, pub-rtp* sealed RTP from the publisher).
OUT gets one directory per target.
"""
import base64, hashlib, hmac, json, os, struct, sys

dump, out = sys.argv[1], sys.argv[2]
SECRET, ADMIN = b"fuzz-secret", "fuzz-admin"


def put(target, name, data):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def token(claims, secret=SECRET):
    h = b64(b'{"alg":"HS256","typ":"JWT"}')
    b = b64(json.dumps(claims).encode())
    s = b64(hmac.new(secret, f"{h}.{b}".encode(), hashlib.sha256).digest())
    return f"{h}.{b}.{s}"


def read(path):
    with open(path, "rb") as f:
        return f.read()


sdps = {n[:-4]: read(os.path.join(dump, "sdp", n)).decode()
        for n in sorted(os.listdir(os.path.join(dump, "sdp")))}
dgs = {n[:-4]: read(os.path.join(dump, "dg", n))
       for n in sorted(os.listdir(os.path.join(dump, "dg")))}
publish = [k for k in sdps if "publish" in k or k.endswith("send") or "simulcast" in k]
view = [k for k in sdps if k not in publish]

# 1. sdp_answer: flags byte (1 publish, 2 estimate, 4 answer to our offer).
for k, sdp in sdps.items():
    flags = 1 if k in publish else 0
    put("sdp_answer", k, bytes([flags]) + sdp.encode())
    if k in view:
        put("sdp_answer", k + "-estimate", bytes([2]) + sdp.encode())
    put("sdp_answer", k + "-wrongway", bytes([flags ^ 1]) + sdp.encode())
put("sdp_answer", "answer-to-offer", bytes([4]) + sdps["str0m-recv"].encode()
    .replace(b"a=recvonly", b"a=recvonly").replace(b"a=setup:actpass", b"a=setup:active"))

# 2. http_request: mode byte then request text.
far, past = 4102444800, 1000
tok_pub = token({"exp": far, "stream": "cam", "publish": True})
tok_sub = token({"exp": far, "stream": "*", "subscribe": True})
tok_old = token({"exp": past, "publish": True})
for k in publish:
    put("http_request", "whip-" + k, "oPOST /whip/cam\nContent-Type: application/sdp\n\n" + sdps[k])
    put("http_request", "whip-tok-" + k, f"sPOST /whip/cam\nContent-Type: application/sdp\nAuthorization: Bearer {tok_pub}\n\n" + sdps[k])
for k in view:
    put("http_request", "whep-" + k, "oPOST /whep/cam?layer=low\nContent-Type: application/sdp; charset=utf-8\n\n" + sdps[k])
    put("http_request", "whep-tok-" + k, f"sPOST /whep/cam\nContent-Type: application/sdp\nAuthorization: bearer {tok_sub}\n\n" + sdps[k])
for name, req in {
    "delete": "oDELETE /whip/cam/00000000000000ff\n",
    "patch": "oPATCH /whep/cam/00000000000000ff\nContent-Type: application/trickle-ice-sdpfrag\n\na=candidate:1 1 udp 1 127.0.0.1 9 typ host\n",
    "layer": "oPOST /whep/cam/00000000000000ff/layer?max=high\n",
    "options": "oOPTIONS /whip/cam\nOrigin: https://example.com\nAccess-Control-Request-Method: POST\n",
    "get-whip": "oGET /whip/cam\n",
    "not-sdp": "oPOST /whip/cam\nContent-Type: text/plain\n\nhello",
    "bad-name": "oPOST /whip/c%20am\nContent-Type: application/sdp\n\nv=0\n",
    "healthz": "oGET /healthz\n",
    "metrics": "oGET /metrics\n",
    "index": "oGET /\n",
    "ws": "oGET /ws?roomId=r&peerId=p\nConnection: upgrade\nUpgrade: websocket\nSec-WebSocket-Version: 13\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\n",
    "admin-sessions": f"sGET /admin/sessions\nAuthorization: Bearer {ADMIN}\n",
    "admin-shards": "oGET /admin/shards\n",
    "admin-streams": "oGET /admin/streams\n",
    "admin-kick": "oDELETE /admin/sessions/00000000000000ff\n",
    "admin-close": f"sDELETE /admin/streams/cam\nAuthorization: Bearer {ADMIN}\n",
    "admin-rooms": "oGET /admin/rooms\n",
    "admin-drain-wrong": "sPOST /admin/drain\nAuthorization: Bearer nope\n",
    "expired": f"sPOST /whip/cam\nContent-Type: application/sdp\nAuthorization: Bearer {tok_old}\n\nv=0\n",
    "missing-token": "sPOST /whip/cam\nContent-Type: application/sdp\n\nv=0\n",
}.items():
    put("http_request", name, req)

# 3. room_messages: lines, "b " for the second participant.
def req(i, method, data):
    return json.dumps({"request": True, "id": i, "method": method, "data": data})

pub_sdp = sdps["str0m-send"]
flow = [
    req(1, "join", {"displayName": "Ann"}),
    "b " + req(1, "join", {"displayName": "Bob"}),
    req(2, "createSendTransport", {"sdp": pub_sdp}),
    req(3, "produce", {"kind": "audio", "source": "mic", "mid": "0"}),
    req(4, "produce", {"kind": "video", "source": "cam", "mid": "1"}),
    "b " + req(2, "setConsumerPreferredLayers", {"consumerId": "x", "spatialLayer": 0}),
    req(5, "chat", {"text": "hi"}),
    req(6, "pauseProducer", {"producerId": "p"}),
    "b " + req(3, "chat", {"text": "hello"}),
    req(7, "leave", {}),
]
put("room_messages", "flow", "\n".join(flow))
put("room_messages", "chromium-send", "\n".join([
    req(1, "join", {}), "b " + req(1, "join", {}),
    req(2, "createSendTransport", {"sdp": sdps["chromium-publish"]}),
    req(3, "produce", {"kind": "video", "mid": "1"}),
]))
put("room_messages", "errors", "\n".join([
    req(1, "produce", {}), "{", '{"id":5,"method":"join"}',
    '{"response":true,"id":1000,"ok":false,"errorReason":"no"}',
    req(2, "join", {"displayName": "x" * 80}), req(3, "join", {}),
    req(4, "nope", {}), req(5, "closeProducer", {"producerId": "zz"}),
    req(6, "resumeProducer", {}), req(7, "setConsumerPreferredLayers", {"consumerId": "c", "spatialLayer": 300}),
    req(8, "chat", {"text": "y" * 1001}), req(9, "createSendTransport", {"sdp": "v=0"}),
]))

# 4. shard_datagrams: [op, len_hi, len_lo, bytes].
def op(code, param, data=b""):
    return bytes([code | (param << 3)]) + struct.pack(">H", len(data)) + data

peer_dg = {i: [v for k, v in dgs.items() if k.startswith(f"peer{i}-")] for i in range(3)}
for i, lst in peer_dg.items():
    put("shard_datagrams", f"peer{i}", b"".join(op(0, i, d) for d in lst[:12]))
put("shard_datagrams", "publisher-rtp", b"".join(op(6, 0, v) for k, v in dgs.items() if k.startswith("pub-rtp")))
put("shard_datagrams", "unknown-flows", b"".join(op(1, n % 32, v) for n, (k, v) in enumerate(dgs.items()) if k.startswith("shard-")))
vp8_key = bytes([0x90, 0xe0, 0x80, 0x01, 0x02, 0x20, 0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a]) + bytes(100)
vp8_delta = bytes([0x90, 0xe0, 0x80, 0x02, 0x02, 0x20, 0x11, 0x00]) + bytes(60)
put("shard_datagrams", "media", op(3, 0, vp8_key) + op(3, 2, vp8_key) + op(4, 0, bytes(40)) + op(3, 2, vp8_delta)
    + op(3, 1, bytes([0xfc]) + bytes(40)) + op(5, 0, b"") + op(3, 2, vp8_key) + op(4, 0, bytes(255)))
put("shard_datagrams", "stun-new-flow", op(2, 1, bytes([0x00, 0x24, 0x00, 0x04, 1, 2, 3, 4])) + op(2, 2) + op(4, 0, bytes(20)))
put("shard_datagrams", "commands", b"".join(op(5, p, bytes(p)) for p in range(10)) + op(4, 0, bytes(255)))

# 5. srtcp_nack: [op, len, bytes]; op 0 seals the plaintext.
def rtcp(pt, count, body):
    words = (len(body) + 4) // 4 - 1
    return bytes([0x80 | count, pt]) + struct.pack(">H", words) + body

def op1(code, data):
    return bytes([code, len(data)]) + data

VIDEO, AUDIO, RTX = 1000, 3000, 2000
nack = rtcp(205, 1, struct.pack(">II", 9, VIDEO) + struct.pack(">HH", 3, 0b101) + struct.pack(">HH", 30, 0xffff))
rr = rtcp(201, 2, struct.pack(">I", 9) + struct.pack(">IIIIII", VIDEO, 0x10000005, 40, 0, 0x12345678, 0x100)
          + struct.pack(">IIIIII", RTX, 0, 0, 0, 0, 0))
sr = rtcp(200, 1, struct.pack(">I", 9) + bytes(20) + struct.pack(">IIIIII", AUDIO, 0, 1, 2, 3, 4))
pli = rtcp(206, 1, struct.pack(">II", 9, VIDEO))
fir = rtcp(206, 4, struct.pack(">II", 9, 0) + struct.pack(">II", VIDEO, 0x01000000))
put("srtcp_nack", "nack", op1(0, nack) + op1(3, b"") + op1(0, nack))
put("srtcp_nack", "rr-then-nack", op1(0, rr) + op1(0, nack) + op1(2, struct.pack(">HHH", 41, 42, 43)) + op1(0, nack))
put("srtcp_nack", "compound", op1(0, sr + rr + pli + fir + nack))
put("srtcp_nack", "reports", op1(3, bytes(200)) + op1(0, rr) + op1(3, bytes(130)))
put("srtcp_nack", "unsealed", op1(1, nack + bytes(20)) + op1(1, bytes([0x80, 200]) + bytes(40)))

# 6. codec: [tag, len, payload].
def pkt(tag, p):
    return bytes([tag, len(p)]) + p

def vp8(pid, tl0, key):
    return bytes([0x90, 0xe0, 0x80 | (pid >> 8), pid & 0xff, tl0, 0x20, 0x00 if key else 0x01, 1, 2, 3])

put("codec", "vp8-switch", pkt(0, vp8(300, 9, True)) + pkt(0, vp8(301, 10, False)) + pkt(1, vp8(5000, 77, True)) + pkt(1, vp8(5001, 78, False)))
put("codec", "vp8-short", pkt(0, bytes([0x90, 0x80, 0x05, 0x00])) + pkt(2, bytes([0x10, 0x00, 0x9d])) + pkt(1, bytes([0x90, 0x40, 0x07, 0x00])))
put("codec", "h264", pkt(0, bytes([0x65, 0])) + pkt(0, bytes([0x78, 0, 2, 0x67, 0x42, 0, 1, 0x68])) + pkt(0, bytes([0x7c, 0x85])))
put("codec", "vp9-av1", pkt(0, bytes([0x08])) + pkt(0, bytes([0x48])) + pkt(0, bytes([0x18])) + pkt(0, bytes([0x10])))
for k, v in dgs.items():
    if k.startswith("pub-rtp"):
        put("codec", k, pkt(0, v[12:12 + 255]))
        break

# 7. stun_token: selector byte then input.
for k, v in dgs.items():
    if v and v[0] < 2 and v[4:8] == b"\x21\x12\xa4\x42":
        put("stun_token", "stun-" + k, b"\x00" + v)
put("stun_token", "bearer", b"\x01Bearer " + tok_pub.encode())
put("stun_token", "bearer-case", b"\x01bEaReR   " + tok_sub.encode() + b" ")
put("stun_token", "token", b"\x02" + tok_pub.encode())
put("stun_token", "token-expired", b"\x02" + tok_old.encode())
put("stun_token", "token-other-secret", b"\x02" + token({"exp": far}, b"other").encode())
put("stun_token", "token-alg-none", b"\x02" + b64(b'{"alg":"none"}').encode() + b"." + b64(b'{"exp":1}').encode() + b".")
