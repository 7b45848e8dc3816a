"""Properties of the domain that hold for any sequence of commands."""

import uuid
from datetime import UTC, datetime
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.domain.commands import MakeTransfer, OpenAccount
from ledger.domain.ledger import Ledger, Recorded, Refused
from ledger.domain.model import AccountFlags

NOW = datetime(2026, 11, 25, tzinfo=UTC)

accounts = st.lists(
    st.builds(
        OpenAccount,
        id=st.uuids(),
        currency=st.sampled_from(["USD", "EUR"]),
        scale=st.sampled_from([0, 2]),
        flags=st.builds(AccountFlags, st.booleans(), st.booleans()),
        metadata=st.just({}),
    ),
    min_size=2,
    max_size=6,
    unique_by=lambda c: c.id,
)

# An amount as a decimal with 0 to 3 fractional digits, sometimes zero or negative.
amounts = st.builds(
    lambda units, exponent: Decimal(units).scaleb(-exponent),
    st.integers(min_value=-5, max_value=10_000),
    st.integers(min_value=0, max_value=3),
)


@st.composite
def scenarios(draw):
    opened = draw(accounts)
    ids = [c.id for c in opened]
    batches = []
    transfer_ids: list[uuid.UUID] = []
    for _ in range(draw(st.integers(1, 12))):
        batch = []
        for _ in range(draw(st.integers(1, 6))):
            # Sometimes reuse an id: replays and conflicting reuses.
            reuse = transfer_ids and draw(st.booleans()) and draw(st.booleans())
            transfer_id = draw(st.sampled_from(transfer_ids)) if reuse else uuid.uuid4()
            transfer_ids.append(transfer_id)
            batch.append(
                MakeTransfer(
                    id=transfer_id,
                    debit_account_id=draw(st.sampled_from(ids)),
                    credit_account_id=draw(st.sampled_from(ids)),
                    amount=draw(amounts),
                    currency=draw(st.sampled_from(["USD", "EUR"])),
                    code=None,
                    metadata={},
                )
            )
        batches.append((batch, draw(st.booleans())))
    return opened, batches


def run(opened, batches):
    ledger = Ledger()
    records = [o.record for o in ledger.decide_all(opened, now=NOW, metadata={})]
    for batch, atomic in batches:
        outcomes = ledger.decide_all(batch, now=NOW, metadata={}, atomic=atomic)
        records += [o.record for o in outcomes if isinstance(o, Recorded)]
    return ledger, records


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_posted_debits_equal_posted_credits_in_every_currency(scenario):
    ledger, _ = run(*scenario)
    for currency in ("USD", "EUR"):
        held = [a.balance for a in ledger.accounts.values() if a.currency == currency]
        assert sum(b.debits_posted for b in held) == sum(b.credits_posted for b in held)


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_no_account_flag_is_ever_violated(scenario):
    ledger, _ = run(*scenario)
    for account in ledger.accounts.values():
        b = account.balance
        if account.flags.debits_must_not_exceed_credits:
            assert b.debits_posted + b.debits_pending <= b.credits_posted
        if account.flags.credits_must_not_exceed_debits:
            assert b.credits_posted + b.credits_pending <= b.debits_posted


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_folding_the_recorded_events_gives_the_balances(scenario):
    ledger, records = run(*scenario)
    folded = Ledger()
    for record in records:
        folded.apply(record)
    assert folded.last_seq == ledger.last_seq == len(records)
    assert {i: a.balance for i, a in folded.accounts.items()} == {i: a.balance for i, a in ledger.accounts.items()}
    assert folded.transfers == ledger.transfers


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_a_failed_atomic_batch_leaves_the_ledger_as_it_was(scenario):
    opened, batches = scenario
    ledger, _ = run(opened, [])
    for batch, _ in batches:
        before = ({i: a.balance.copy() for i, a in ledger.accounts.items()}, dict(ledger.transfers), ledger.last_seq)
        outcomes = ledger.decide_all(batch, now=NOW, metadata={}, atomic=True)
        if any(isinstance(o, Refused) for o in outcomes):
            after = ({i: a.balance for i, a in ledger.accounts.items()}, dict(ledger.transfers), ledger.last_seq)
            assert after == before


def test_amounts_are_recorded_at_the_account_scale():
    ledger = Ledger()
    a, b = uuid.uuid4(), uuid.uuid4()
    ledger.decide_all([OpenAccount(i, "USD", 2, AccountFlags(), {}) for i in (a, b)], now=NOW, metadata={})
    outcome = ledger.decide(MakeTransfer(uuid.uuid4(), a, b, Decimal("5.1"), "USD", None, {}), now=NOW, metadata={})
    assert str(outcome.record.event.amount) == "5.10"
