"""A hypothesis state machine over the real write path (writer, append,
PostgreSQL): accounts, pending and posted transfers, posts, voids, reversals
(of reversals too), closes, time passing on an injected clock and the expiry
sweep. After every step the stored balances equal the fold of the log, no
account flag is violated, and no transfer is reversed past what was posted."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from ledger.domain.codes import Code
from ledger.domain.commands import CloseAccount, MakeTransfer, OpenAccount, PostTransfer, ReverseTransfer, VoidTransfer
from ledger.domain.ledger import Outcome, Recorded, Refused
from ledger.domain.model import AccountFlags
from ledger.store.connection import connect, create_pool
from ledger.store.expiry import Expirer
from ledger.store.retry import RetryPolicy
from ledger.store.write_path import AppendRequest
from ledger.store.writer import Writer
from tests.conftest import (
    FakeClock,
    assert_log_matches_projections,
    assert_no_flag_violated,
    clone_template,
    drop_database,
)

# Amounts of the same order as the funds, so that the flags' limits are reached often.
amounts = st.sampled_from(["0.01", "1.00", "2.50", "4", "7.00"]).map(Decimal)
funds = st.sampled_from(["5.00", "10.00"]).map(Decimal)
flags = st.sampled_from([AccountFlags(), AccountFlags(True, False), AccountFlags(False, True)])


_REVERSAL_MISMATCHES = """
    SELECT t.id, t.reversed_amount, t.posted_amount, coalesce(sum(r.amount), 0) AS reversals
    FROM transfers t LEFT JOIN transfers r ON r.reverses = t.id
    GROUP BY t.id
    HAVING t.reversed_amount <> coalesce(sum(r.amount), 0) OR t.reversed_amount > coalesce(t.posted_amount, 0)
"""


class LedgerMachine(RuleBasedStateMachine):
    server_dsn: str
    template_database: str

    transfers = Bundle("transfers")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = FakeClock()
        self.dsn = self.run(clone_template(self.server_dsn, self.template_database))
        self.writer = Writer(self.dsn, policy=RetryPolicy(), clock=self.clock)
        self.db = self.run(connect(self.dsn))
        self.pool = self.run(create_pool(self.dsn, min_size=1, max_size=1))
        self.expirer = Expirer(self.pool, self.writer.submit, self.clock, interval=3600)
        #: Accounts transfers are made between (closed ones are dropped).
        self.accounts: list[uuid.UUID] = []

    def run(self, awaitable):
        return self.loop.run_until_complete(awaitable)

    def execute(self, *commands) -> list[Outcome]:
        [outcomes] = self.run(self.writer.submit([AppendRequest(commands)]))
        return outcomes

    def teardown(self) -> None:
        self.writer.close()
        self.run(self.pool.close())
        self.run(self.db.close())
        self.run(drop_database(self.server_dsn, self.dsn))
        self.loop.close()

    @initialize()
    def funding_source(self):
        # Unrestricted and never picked for transfers: it only funds the others.
        self.source = uuid.uuid4()
        self.execute(OpenAccount(self.source, "USD", 2, AccountFlags(), {}))

    @rule(flags=flags, funds=funds)
    def open_account(self, flags, funds):
        """Open an account and give it credits (refused when its flags forbid them)."""
        account = uuid.uuid4()
        opened, _ = self.execute(
            OpenAccount(account, "USD", 2, flags, {}),
            MakeTransfer(uuid.uuid4(), self.source, account, funds, "USD", None, {}),
        )
        assert isinstance(opened, Recorded)
        self.accounts.append(account)

    @precondition(lambda self: len(self.accounts) >= 2)
    @rule(target=transfers, data=st.data())
    def make_transfers(self, data):
        """One to four transfers, pending or not, in one append."""
        commands = []
        for _ in range(data.draw(st.integers(1, 4))):
            debit, credit = data.draw(st.permutations(self.accounts))[:2]
            pending = data.draw(st.booleans())
            timeout = data.draw(st.none() | st.integers(1, 60)) if pending else None
            commands.append(
                MakeTransfer(uuid.uuid4(), debit, credit, data.draw(amounts), "USD", None, {}, pending, timeout)
            )
        outcomes = self.execute(*commands)
        # Only recorded transfers go on to be posted and voided.
        return multiple(*(c.id for c, o in zip(commands, outcomes) if isinstance(o, Recorded)))

    @rule(transfer=transfers, amount=st.none() | amounts)
    def post(self, transfer, amount):
        before = self.run(self.db.fetchrow("SELECT status, expires_at FROM transfers WHERE id = $1", transfer))
        [outcome] = self.execute(PostTransfer(transfer, amount))
        if before["status"] == "pending" and before["expires_at"] is not None:
            if self.clock() >= before["expires_at"]:
                # Past its deadline, expiry recorded or not, nothing posts it.
                assert isinstance(outcome, Refused) and outcome.code == Code.TRANSFER_EXPIRED

    @rule(transfer=transfers)
    def void(self, transfer):
        self.execute(VoidTransfer(transfer))

    @rule(target=transfers, transfer=transfers, amount=st.none() | amounts)
    def reverse(self, transfer, amount):
        """Reverse part or all of a transfer: refused unless it is posted and
        the amount fits in what is left; a recorded reversal may be reversed in turn."""
        reversal = uuid.uuid4()
        [outcome] = self.execute(ReverseTransfer(reversal, transfer, amount))
        return multiple(reversal) if isinstance(outcome, Recorded) else multiple()

    @precondition(lambda self: self.accounts)
    @rule(data=st.data())
    def close(self, data):
        account = data.draw(st.sampled_from(self.accounts))
        [outcome] = self.execute(CloseAccount(account))
        if isinstance(outcome, Recorded):
            self.accounts.remove(account)
        else:
            assert outcome.code == Code.ACCOUNT_HAS_PENDING

    @rule(seconds=st.integers(1, 90), sweep=st.booleans())
    def let_time_pass(self, seconds, sweep):
        """Move the clock; sometimes the expiry sweep runs, sometimes not yet."""
        self.clock.advance(seconds)
        if sweep:
            self.run(self.expirer.sweep())
            overdue = self.run(
                self.db.fetchval(
                    "SELECT count(*) FROM transfers WHERE status = 'pending' AND expires_at <= $1", self.clock()
                )
            )
            assert overdue == 0

    @invariant()
    def log_matches_projections_and_flags_hold(self):
        self.run(assert_log_matches_projections(self.db))
        self.run(assert_no_flag_violated(self.db))

    @invariant()
    def reversals_never_exceed_what_was_posted(self):
        """Each transfer's reversed_amount is the sum of its reversals, and at
        most what of it was posted."""
        wrong = self.run(self.db.fetch(_REVERSAL_MISMATCHES))
        assert wrong == []

    @invariant()
    def pending_balances_are_the_open_holds(self):
        """What an account holds pending is the sum of its transfers still pending."""
        mismatched = self.run(self.db.fetch(_PENDING_MISMATCHES))
        assert mismatched == []


_PENDING_MISMATCHES = """
    WITH holds AS (
        SELECT account_id, sum(debit) AS debits, sum(credit) AS credits FROM (
            SELECT debit_account_id AS account_id, amount AS debit, 0 AS credit
            FROM transfers WHERE status = 'pending'
            UNION ALL
            SELECT credit_account_id, 0, amount FROM transfers WHERE status = 'pending'
        ) h GROUP BY account_id
    )
    SELECT b.account_id FROM balances b LEFT JOIN holds h ON h.account_id = b.account_id
    WHERE b.debits_pending <> coalesce(h.debits, 0) OR b.credits_pending <> coalesce(h.credits, 0)
"""


def test_two_phase_state_machine(server_dsn, template_database):
    machine = type("Machine", (LedgerMachine,), {"server_dsn": server_dsn, "template_database": template_database})
    run_state_machine_as_test(machine, settings=settings(max_examples=50, stateful_step_count=60, deadline=None))
