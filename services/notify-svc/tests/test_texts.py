"""Unit tests: what the user reads (no database, no broker)."""

import uuid
from datetime import UTC, datetime

import pytest

from contracts.events import (
    ChargeFailed,
    ChargeSettled,
    EjectFailureReason,
    PriceSnapshot,
    RefundSettled,
    RentalEnded,
    RentalFailed,
    RentalStarted,
)
from kit.pagination import InvalidCursor
from notify_svc import texts
from notify_svc.messages.service import decode_cursor, encode_cursor
from notify_svc.models import Category

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("fen", "text"),
    [(0, "¥0.00"), (5, "¥0.05"), (300, "¥3.00"), (1234, "¥12.34"), (100000, "¥1000.00"), (-250, "-¥2.50")],
)
def test_format_fen(fen, text):
    assert texts.format_fen(fen) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0 s"),
        (45, "45 s"),
        (60, "1 min"),
        (119, "1 min"),
        (300, "5 min"),
        (3600, "1 h"),
        (3900, "1 h 5 min"),
        (3959, "1 h 5 min"),
        (86400, "1 d"),
        (86400 + 3 * 3600, "1 d 3 h"),
        (2 * 86400 + 61, "2 d 1 min"),
        (-5, "0 s"),
    ],
)
def test_format_duration(seconds, text):
    assert texts.format_duration(seconds) == text


def test_every_eject_failure_reason_has_its_own_text():
    for reason in EjectFailureReason:
        assert reason in texts.REASON_TEXT
    assert len(set(texts.REASON_TEXT.values())) == len(EjectFailureReason)
    assert texts.failure_reason("something_new") == texts.GENERIC_REASON


def test_rental_ended_text():
    data = RentalEnded(
        rental_id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        bank_id="PB-000003",
        start_cabinet_id="CAB-0001",
        return_cabinet_id="CAB-0002",
        started_at=NOW,
        ended_at=NOW,
        duration_seconds=3900,
        fee_fen=300,
    )
    text = texts.rental_ended(data)
    assert text.category is Category.RENTAL
    assert text.title == "Rental ended"
    assert text.body == "You returned power bank PB-000003 at CAB-0002 after 1 h 5 min. Fee: ¥3.00."


def test_rental_failed_text():
    data = RentalFailed(
        rental_id=uuid.uuid4(), user_id=uuid.uuid4(), reason=EjectFailureReason.BANK_BATTERY_LOW, at=NOW
    )
    text = texts.rental_failed(data)
    assert text.title == "Borrowing failed"
    assert "battery is too low" in text.body
    assert text.body.endswith("You have not been charged.")


def test_payment_texts():
    ids = {"charge_id": uuid.uuid4(), "rental_id": uuid.uuid4(), "user_id": uuid.uuid4()}
    settled = texts.charge_settled(ChargeSettled(**ids, amount_fen=300, balance_fen=1700, settled_at=NOW))
    assert settled.category is Category.PAYMENT
    assert settled.title == "Payment confirmed"
    assert "¥3.00 from your balance" in settled.body
    assert "Balance: ¥17.00" in settled.body
    discounted = texts.charge_settled(
        ChargeSettled(
            **ids, amount_fen=300, balance_fen=1900, settled_at=NOW, coupon_fen=200, red_packet_fen=50, paid_fen=50
        )
    )
    assert discounted.body == (
        "Payment confirmed: fee ¥3.00, discount ¥2.50 (coupon ¥2.00, red packets ¥0.50), "
        "¥0.50 from your balance. Balance: ¥19.00."
    )
    failed = texts.charge_failed(ChargeFailed(**ids, amount_fen=450, reason="insufficient_balance"))
    assert failed.title == "Payment failed"
    assert "¥4.50" in failed.body
    assert "your balance is too low" in failed.body
    assert failed.body.endswith("please pay manually in the app.")
    assert "card declined" in texts.charge_failed(ChargeFailed(**ids, amount_fen=1, reason="card_declined")).body


def test_cursor_round_trip_and_garbage():
    message_id = uuid.uuid4()
    assert decode_cursor(encode_cursor(NOW, message_id)) == (NOW, message_id)
    for bad in ["", "!!!", "bm90LWEtY3Vyc29y", encode_cursor(NOW, message_id)[:-3]]:
        with pytest.raises(InvalidCursor):
            decode_cursor(bad)


def test_purchase_revival_and_refund_texts():
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    purchased = RentalEnded(
        rental_id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        bank_id="PB-000009",
        start_cabinet_id="CAB-0001",
        return_cabinet_id="CAB-0001",
        started_at=now,
        ended_at=now,
        duration_seconds=3 * 24 * 3600,
        fee_fen=9900,
        purchased=True,
    )
    text = texts.rental_ended(purchased)
    assert text.title == "Power bank purchased"
    assert "¥99.00" in text.body
    assert "PB-000009" in text.body
    revived = RentalStarted(
        rental_id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        bank_id="PB-000003",
        cabinet_id="CAB-0002",
        slot=4,
        started_at=now,
        price=PriceSnapshot(period_minutes=30, price_per_period_fen=150, free_minutes=0, daily_cap_fen=2000),
        after_failure=True,
    )
    text = texts.rental_revived(revived)
    assert text.category == Category.RENTAL
    assert "PB-000003" in text.body
    assert "12:00:00 UTC" in text.body
    assert "free of charge" in text.body
    refund = RefundSettled(
        refund_id=uuid.uuid4(),
        rental_id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        amount_fen=150,
        balance_fen=4850,
        settled_at=now,
    )
    text = texts.refund_settled(refund)
    assert (text.category, text.title) == (Category.PAYMENT, "Refund received")
    assert "¥1.50" in text.body
    assert "¥48.50" in text.body
    declined = ChargeFailed(
        charge_id=uuid.uuid4(), rental_id=uuid.uuid4(), user_id=uuid.uuid4(), amount_fen=150, reason="provider_declined"
    )
    assert "declined" in texts.charge_failed(declined).body
