"""Customer context for replies: a CRM provider protocol and its SQLite implementation.

SQLite schema (``sample_crm.sql`` beside the sample KB creates it with demo rows)::

    CREATE TABLE customers (
        id                 TEXT PRIMARY KEY,   -- the caller's customer id, e.g. "C1001"
        name               TEXT NOT NULL,      -- full name as the agent would say it, e.g. "陳大文"
        surname            TEXT NOT NULL,      -- e.g. "陳"; addressed as surname + honorific
        honorific          TEXT NOT NULL,      -- 先生 | 小姐 | 女士 | 太太 | 博士 ...
        name_en            TEXT DEFAULT '',    -- e.g. "Chan Tai Man"
        surname_en         TEXT DEFAULT '',    -- e.g. "Chan"
        honorific_en       TEXT DEFAULT '',    -- Mr | Ms | Mrs | Dr ...
        preferred_language TEXT DEFAULT 'yue-Hant-HK',  -- BCP 47, 'yue-Hant-HK' or 'en' (the
                                                        -- session starts in it; 'zh-Hant' read as
                                                        -- 'yue-Hant-HK')
        phone              TEXT DEFAULT ''      -- e.g. "91234567" or "+852 9123 4567": found by
                                                -- caller number (`by_phone`) with or without 852
    );
    CREATE TABLE orders (
        id          TEXT PRIMARY KEY,           -- as printed and spoken: "85321", "A12345"
        customer_id TEXT NOT NULL REFERENCES customers(id),
        status      TEXT NOT NULL,              -- a key of ORDER_STATUS (other values shown as is)
        item        TEXT DEFAULT '',            -- what was ordered, e.g. "iPhone 16 256GB"
        eta         TEXT DEFAULT '',            -- expected delivery, ISO date, '' if none
        updated_at  TEXT DEFAULT ''             -- ISO timestamp of the last status change
    );

An order is *open* unless its status is `delivered`, `cancelled` or `refunded`.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from voice.errors import ConfigError

log = logging.getLogger(__name__)

SAMPLE_CRM_SQL = Path(__file__).parent / "data" / "sample_crm.sql"
# Order status codes and how an agent says them, in Chinese and English.
ORDER_STATUS = {
    "pending": ("等候付款", "awaiting payment"),
    "processing": ("處理中", "being processed"),
    "packed": ("已包裝，等候出貨", "packed and waiting to ship"),
    "shipped": ("已出貨", "shipped"),
    "out_for_delivery": ("派送中", "out for delivery"),
    "delivered": ("已送達", "delivered"),
    "cancelled": ("已取消", "cancelled"),
    "refund_pending": ("退款處理中", "refund in progress"),
    "refunded": ("已退款", "refunded"),
}
CLOSED_STATUSES = frozenset({"delivered", "cancelled", "refunded"})


@dataclass(frozen=True)
class Order:
    """One order as the CRM knows it."""

    id: str
    customer_id: str
    status: str
    item: str = ""
    eta: str = ""
    updated_at: str = ""

    @property
    def is_open(self) -> bool:
        return self.status not in CLOSED_STATUSES

    def status_text(self, language: str) -> str:
        """The status as said to the caller in `language` (a BCP 47 tag; "en" or Chinese)."""
        zh, en = ORDER_STATUS.get(self.status, (self.status, self.status))
        return en if language == "en" else zh


@dataclass(frozen=True)
class Customer:
    """A caller the CRM knows: how to address them, their language and their orders."""

    id: str
    name: str
    surname: str
    honorific: str
    name_en: str = ""
    surname_en: str = ""
    honorific_en: str = ""
    preferred_language: str = "yue-Hant-HK"
    orders: tuple[Order, ...] = ()

    def address(self, language: str) -> str:
        """How an agent addresses the caller: 陳先生 / Mr Chan."""
        if language == "en" and self.surname_en:
            return f"{self.honorific_en} {self.surname_en}".strip()
        return f"{self.surname}{self.honorific}"

    @property
    def open_orders(self) -> tuple[Order, ...]:
        return tuple(o for o in self.orders if o.is_open)


@runtime_checkable
class CustomerProvider(Protocol):
    """Where the answer engine gets customer context; implement it over any CRM."""

    def customer(self, customer_id: str) -> Customer | None:
        """The customer with this id (orders included), or None."""
        ...

    def order(self, order_id: str) -> Order | None:
        """The order with this id (as spoken, normalised: upper case, no spaces), or None."""
        ...


class SqliteCustomerProvider:
    """A CustomerProvider over a SQLite file in the schema of this module's docstring."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigError(
                f"CRM database {self.path} not found; create a demo one with "
                "`voice kb sample-crm FILE`"
            )
        # check_same_thread=False: the server may answer a call from a worker thread.
        self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        try:
            self._db.execute("SELECT id FROM customers LIMIT 1")
            self._db.execute("SELECT id, customer_id, status FROM orders LIMIT 1")
        except sqlite3.Error as exc:
            raise ConfigError(
                f"CRM database {self.path} does not have the expected tables "
                f"({exc}); see voice/answer/crm.py for the schema"
            ) from exc

    def close(self) -> None:
        self._db.close()

    @staticmethod
    def _order(row: sqlite3.Row) -> Order:
        keys = row.keys()
        return Order(
            id=row["id"],
            customer_id=row["customer_id"],
            status=row["status"],
            item=row["item"] if "item" in keys and row["item"] else "",
            eta=row["eta"] if "eta" in keys and row["eta"] else "",
            updated_at=row["updated_at"] if "updated_at" in keys and row["updated_at"] else "",
        )

    def customer(self, customer_id: str) -> Customer | None:
        row = self._db.execute("SELECT * FROM customers WHERE id = ?", (customer_id,)).fetchone()
        if row is None:
            return None
        orders = self._db.execute(
            "SELECT * FROM orders WHERE customer_id = ? ORDER BY updated_at DESC, id",
            (customer_id,),
        ).fetchall()
        keys = row.keys()

        def get(name: str, default: str = "") -> str:
            return row[name] if name in keys and row[name] else default

        return Customer(
            id=row["id"],
            name=row["name"],
            surname=get("surname", row["name"][:1]),
            honorific=get("honorific"),
            name_en=get("name_en"),
            surname_en=get("surname_en"),
            honorific_en=get("honorific_en"),
            preferred_language=get("preferred_language", "yue-Hant-HK"),
            orders=tuple(self._order(o) for o in orders),
        )

    def by_phone(self, phone: str) -> Customer | None:
        """The customer whose phone is `phone` (a caller number or WhatsApp id: spaces, dashes,
        `+` and Hong Kong's 852 ignored), or None; with several, the lowest id."""
        wanted = phone_keys(phone)
        if not wanted:
            return None
        marks = ", ".join("?" * len(wanted))
        digits = "replace(replace(replace(replace(phone, ' ', ''), '-', ''), '+', ''), '.', '')"
        row = self._db.execute(
            f"SELECT id FROM customers WHERE {digits} IN ({marks}) ORDER BY id LIMIT 1", wanted
        ).fetchone()
        return None if row is None else self.customer(row["id"])

    def order(self, order_id: str) -> Order | None:
        row = self._db.execute(
            "SELECT * FROM orders WHERE upper(replace(id, ' ', '')) = ?",
            (order_id.replace(" ", "").upper(),),
        ).fetchone()
        return None if row is None else self._order(row)


HK_COUNTRY_CODE = "852"


def phone_keys(phone: str) -> tuple[str, ...]:
    """The digit strings a phone number may be stored as: as given, and without Hong Kong's
    country code (+852 9123 4567, 85291234567 and 91234567 are one number)."""
    digits = "".join(ch for ch in phone if ch.isdigit())
    if not digits:
        return ()
    if digits.startswith(HK_COUNTRY_CODE) and len(digits) == len(HK_COUNTRY_CODE) + 8:
        return (digits, digits[len(HK_COUNTRY_CODE) :])
    if len(digits) == 8:
        return (digits, HK_COUNTRY_CODE + digits)
    return (digits,)


def customer_by_phone(crm: CustomerProvider | None, phone: str | None) -> Customer | None:
    """The CRM's customer with this phone number, if the provider can look numbers up."""
    lookup = getattr(crm, "by_phone", None)
    return lookup(phone) if lookup is not None and phone else None


def create_sample_db(path: str | Path) -> Path:
    """Write a demo CRM (schema and rows from `sample_crm.sql`) to `path`, replacing it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    with sqlite3.connect(tmp) as db:
        db.executescript(SAMPLE_CRM_SQL.read_text(encoding="utf-8"))
    db.close()
    tmp.replace(path)
    log.info("wrote sample CRM to %s", path)
    return path


__all__ = [
    "Order",
    "Customer",
    "CustomerProvider",
    "SqliteCustomerProvider",
    "customer_by_phone",
    "phone_keys",
    "create_sample_db",
    "ORDER_STATUS",
    "SAMPLE_CRM_SQL",
]
