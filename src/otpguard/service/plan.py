"""What a verification's check events and approval need of its number (``Plan``),
worked out once by the engine's policy: by a check that knows the number, and by a
start for a store that judges checks itself (``Store.judges_checks``)."""

from __future__ import annotations

import dataclasses

from ..destinations import destination_of, is_email
from ..events import mask_number
from ..guards import scope_buckets
from ..models import Verification
from ..numberlists import flag_keys
from ..stores.settlement import Plan
from .base import VerifierBase


def plan_of(verifier: VerifierBase, v: Verification) -> Plan:
    """The masked number and its hash, and unless the number is not counted
    (allowlisted; no country), the allow entries to look up, the admission buckets to
    credit (the run-time allow entries are read in the same step: their sends were not
    counted), the trusted flags and the conversion watch's approval counters."""
    hashes = verifier.keyring.keyed_hashes("number", v.to)  # newest first: number_hash
    plan = Plan(mask_number(v.to), hashes[0])
    number = destination_of(v)  # only the prefix and the region are needed
    if (v.country is None and not is_email(number)) or verifier._allowlisted(number):
        return plan
    return dataclasses.replace(
        plan,
        listed=() if is_email(number) else tuple(flag_keys(v.to)),
        buckets=tuple(scope_buckets(verifier.admission, number, v.owner)),
        trusted=tuple("trusted:" + h for h in hashes),
        counters=tuple(verifier.watch.approval_rules(number)),
    )
