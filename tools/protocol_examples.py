# Independent transcription of docs/protocol.md (sections 2, 3, 6, 11, 12) for the worked examples.
import struct, blake3
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives import serialization

def H(tag, data):
    t = tag.encode()
    return blake3.blake3(bytes([len(t)]) + t + data).digest()
u64 = lambda x: struct.pack('<Q', x)
u32 = lambda x: struct.pack('<I', x)
def enc_bytes(b): return u64(len(b)) + b
GENESIS = bytes.fromhex("000e531ef2a76c79fb1a37af778131104c18dd066021d405f1b5dfed798e6225")
TARGET = (1 << 246) - 1   # local stamp target: 10 zero bits

sk = Ed25519PrivateKey.from_private_bytes(bytes([1]*32))
pk = sk.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
name = b"@alice"
owners = u64(1) + pk
value = enc_bytes(b"hi")

record = u64(1) + owners + value + u64(7)
rh = H("xirtam/record/v2", record)
key = H("xirtam/state-key/v1", name)
print("pk", pk.hex())
print("record", len(record), record.hex())
print("record_hash", rh.hex())
print("state_root", H("xirtam/state-leaf/v1", key + rh).hex())

salt = bytes([0x5a]*32)
commitment = H("xirtam/claim-commitment/v1", GENESIS + enc_bytes(name) + pk + salt)
commit_id = H("xirtam/commit-id/v1", commitment + GENESIS)
def solve(opid, block):
    n = 0
    while True:
        h = H("xirtam/stamp/v1", opid + block + u64(n))
        if int.from_bytes(h, 'big') <= TARGET:
            return n, h
        n += 1
cn, ch = solve(commit_id, GENESIS)
commit_op = u32(0) + commitment + GENESIS + u64(cn)
print("commitment", commitment.hex())
print("commit_id", commit_id.hex())
print("commit stamp nonce", cn, ch.hex())
print("commit op", len(commit_op), "hash", H("xirtam/op/v2", commit_op).hex())
print("commit_key", H("xirtam/commit-key/v1", commitment).hex())
print("commit_entry(7)", H("xirtam/commit-entry/v1", u64(7)).hex())

claim = b"\x01" + salt + u64(7)
content = enc_bytes(name) + u64(1) + pk + owners + value + claim + GENESIS
msg_tag = b"xirtam/sig/op/v2"
sig = sk.sign(bytes([len(msg_tag)]) + msg_tag + GENESIS + content)
op_id = H("xirtam/op-id/v2", content)
n, sh = solve(op_id, GENESIS)
op = u32(1) + content[:-32] + sig + GENESIS + u64(n)
oh = H("xirtam/op/v2", op)
print("content", len(content), content.hex())
print("signature", sig.hex())
print("op_id", op_id.hex())
print("stamp nonce", n, sh.hex())
print("op", len(op), "hash", oh.hex())
print("ops_root", H("xirtam/ops-root/v1", u64(1) + oh).hex())
