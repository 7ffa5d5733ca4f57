"""On every backend: after a whole session through the Verifier, the store's raw
contents hold no code, only keyed HMAC tags.

Codes are 10 digits here so that an accidental match against a timestamp or a
number in the dump is practically impossible; the code path is the same.
"""

from __future__ import annotations

from otpguard.clock import ManualClock
from otpguard.codes import new_secret_hex
from otpguard.config import load_settings
from otpguard.service import Verifier
from otpguard.stores import Store
from otpguard.transports.memory import MemoryTransport

from ..dump import dump_store


async def test_no_code_in_any_store(store: Store) -> None:
    clock = ManualClock()
    outbox = MemoryTransport()
    settings = load_settings(
        env={}, secret_keys=[new_secret_hex()], transport="memory", code_length=10,
        log_events=False, failed_check_floor=0.0,
    )  # fmt: skip
    otp = Verifier(settings, store, outbox, clock=clock)  # the fixture opens and closes it
    ids = []
    # Half of them transaction codes, bound to an amount and a payee (kept in the
    # store beside the tag; the code is not).
    pay = {"purpose": "transaction", "amount": "25.00", "currency": "GBP", "payee": "Acme Ltd"}
    bound = [pay if n % 2 else {} for n in range(4)]
    for n in range(4):
        v = await otp.start(f"+4474{n:02d}123456", client_ip=f"198.51.100.{n + 1}", **bound[n])
        ids.append(v.id)
        code = outbox.last_code(v.to)
        wrong = code[:-1] + str((int(code[-1]) + 1) % 10)
        await otp.check(wrong, verification_id=v.id, **bound[n])
        await otp.check(code, verification_id=v.id, purpose="signup")  # another purpose
    clock.advance(31)
    for vid in ids[:2]:
        await otp.resend(vid)
    for vid, kwargs in zip(ids, bound, strict=True):
        v = await otp.get(vid)
        assert (await otp.check(outbox.last_code(v.to), verification_id=vid, **kwargs)).valid

    dump = await dump_store(store)
    assert all(vid in dump for vid in ids)  # the dump is the real contents
    assert "Acme Ltd" in dump and "transaction" in dump
    codes = {m.code for m in outbox.outbox}
    assert len(codes) == 6
    for code in codes:
        assert code not in dump
