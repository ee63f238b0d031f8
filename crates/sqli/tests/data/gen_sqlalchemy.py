#!/usr/bin/env python3
"""Writes benign-sqlalchemy-postgres.sql and benign-sqlalchemy-mysql.sql: statements that the
SQLAlchemy ORM/Core (2.x) compiles for an ordinary application, with values inlined the way
client-side binding sends them (psycopg2, PyMySQL), for the SQL-injection detector's benign
corpus. The output files are checked in; rerun after changing this script:

    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install 'sqlalchemy>=2,<3'
    /tmp/venv/bin/python crates/sqli/tests/data/gen_sqlalchemy.py
"""
import os
import datetime

from sqlalchemy import (
    JSON, Boolean, Column, DateTime, ForeignKey, Integer, MetaData, Numeric, String, Table, Text,
    and_, case, cast, delete, exists, false, func, insert, literal, not_, or_, select, true,
    union_all, update, values,
)
from sqlalchemy.dialects import mysql, postgresql
from sqlalchemy.dialects.mysql import insert as my_insert
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert

md = MetaData()
users = Table(
    "users", md,
    Column("id", Integer, primary_key=True),
    Column("email", String(255)),
    Column("name", String(100)),
    Column("bio", Text),
    Column("active", Boolean),
    Column("created_at", DateTime),
    Column("deleted_at", DateTime),
)
orders = Table(
    "orders", md,
    Column("id", Integer, primary_key=True),
    Column("user_id", ForeignKey("users.id")),
    Column("status", String(20)),
    Column("amount", Numeric(10, 2)),
    Column("data", JSON),
    Column("created_at", DateTime),
)
items = Table(
    "order_items", md,
    Column("id", Integer, primary_key=True),
    Column("order_id", ForeignKey("orders.id")),
    Column("sku", String(40)),
    Column("qty", Integer),
)
pg_docs = Table(
    "docs", md,
    Column("id", Integer, primary_key=True),
    Column("meta", JSONB),
    Column("tags", ARRAY(String)),
)
categories = Table(
    "categories", md,
    Column("id", Integer, primary_key=True),
    Column("parent_id", Integer),
    Column("name", String(50)),
)

TEXTS = [
    "ann@example.com",
    "O'Brien",
    "it's 1 or 2 = 3 -- really",
    "Tom & Jerry; select the best",
    'He said "hi" (twice)',
    "50% off -- today only!",
    "a/b/c#frag?x=1&y=2",
    "multi\nline; text",
    "union station",
    "'quoted'",
    "back\\slash",
]
WHEN = datetime.datetime(2024, 5, 1, 10, 0, 0)


def statements(pg):
    out = []
    for t in TEXTS:
        out += [
            select(users).where(users.c.email == t).limit(1),
            select(users.c.id).where(users.c.name.like(f"%{t}%")),
            select(users.c.id).where(users.c.name.contains(t, autoescape=True)),
            select(users.c.id).where(users.c.name.startswith(t, autoescape=True)),
            insert(users).values(email=t, name=t, bio=t, active=True, created_at=WHEN),
            update(users).where(users.c.id == 5).values(bio=t),
            select(users.c.id).where(or_(users.c.name == t, users.c.email == t)),
        ]
        if pg:
            out.append(select(users.c.id).where(users.c.name.ilike(t)))
            out.append(select(pg_docs.c.id).where(pg_docs.c.meta["title"].astext == t))
    out += [
        select(users).where(users.c.id == 42),
        select(users).where(users.c.id.in_([1, 2, 3, 17, 42])),
        select(users).where(users.c.id.in_([])),
        select(users).where(users.c.id.not_in([])),
        select(users).where(users.c.name.in_(["ed", "wendy", "jack"])),
        select(users).where(and_(users.c.active == true(), users.c.deleted_at.is_(None))),
        select(users).where(users.c.deleted_at.is_not(None)),
        select(users).where(not_(users.c.active)),
        select(users).where(users.c.created_at.between(WHEN, WHEN + datetime.timedelta(days=30))),
        select(users).where(true()),
        select(users).where(false()),
        select(users).where(and_()),
        select(users).where(or_(false(), users.c.id == 3)),
        select(users).order_by(users.c.created_at.desc()).limit(20).offset(40),
        select(users.c.id, func.count(orders.c.id)).join(orders).group_by(users.c.id)
        .having(func.count(orders.c.id) > 5),
        select(users.c.id).outerjoin(orders, and_(orders.c.user_id == users.c.id, orders.c.status == "paid"))
        .where(orders.c.id.is_(None)),
        select(users.c.id).where(exists().where(orders.c.user_id == users.c.id)),
        select(users.c.id).where(users.c.id.in_(select(orders.c.user_id).where(orders.c.amount > 100))),
        select(func.lower(users.c.email)).distinct(),
        select(users.c.id, func.row_number().over(partition_by=orders.c.user_id, order_by=orders.c.created_at.desc()))
        .join(orders),
        select(orders.c.user_id, func.sum(orders.c.amount).over(partition_by=orders.c.user_id, order_by=orders.c.created_at)),
        select(case((orders.c.amount > 100, "big"), (orders.c.amount > 10, "medium"), else_="small"), func.count())
        .group_by(orders.c.amount),
        select(cast(orders.c.amount, Integer), func.coalesce(orders.c.status, "none")),
        select(users.c.id, literal("x").label("kind")),
        union_all(select(users.c.id, literal("user")), select(orders.c.id, literal("order")).where(orders.c.amount > 1)),
        select(orders).where(orders.c.data["customer"]["country"].as_string() == "NL"),
        delete(orders).where(orders.c.created_at < WHEN),
        update(orders).where(orders.c.id == 9).values(amount=orders.c.amount - 10, status="refunded"),
        insert(items).values([{"order_id": 1, "sku": "A-1", "qty": 2}, {"order_id": 1, "sku": "B'2", "qty": 1}]),
        select(items.c.sku, func.sum(items.c.qty)).group_by(items.c.sku).order_by(func.sum(items.c.qty).desc()),
        select(users).where(users.c.email.regexp_match("^[a-z]+@example\\.com$")),
        select(func.count()).select_from(users).where(users.c.active.is_(True)),
    ]
    tree = select(categories.c.id, categories.c.parent_id).where(categories.c.parent_id.is_(None)).cte("tree", recursive=True)
    tree = tree.union_all(select(categories.c.id, categories.c.parent_id).join(tree, categories.c.parent_id == tree.c.id))
    out.append(select(tree))
    recent = select(orders.c.user_id, func.max(orders.c.created_at).label("last")).group_by(orders.c.user_id).cte("recent")
    out.append(select(users.c.email).join(recent, recent.c.user_id == users.c.id).where(recent.c.last > WHEN))
    v = values(Column("id", Integer), Column("name", String), name="v").data([(1, "a"), (2, "it's")])
    out.append(select(v))
    if pg:
        out += [
            select(pg_docs).where(pg_docs.c.tags.contains(["sale", "b2b"])),
            select(pg_docs).where(pg_docs.c.tags.any("sale")),
            select(pg_docs).where(pg_docs.c.meta.has_key("coupon")),
            select(pg_docs).where(pg_docs.c.meta.contains({"status": "paid"})),
            select(users).distinct(users.c.email).order_by(users.c.email, users.c.created_at.desc()),
            pg_insert(users).values(id=1, email="x@example.com").on_conflict_do_update(
                index_elements=["id"], set_={"email": "x@example.com"}),
            select(users).with_for_update(skip_locked=True).limit(1),
        ]
    else:
        out += [
            my_insert(users).values(id=1, email="x@example.com").on_duplicate_key_update(email="y@example.com"),
            select(users).with_for_update().limit(1),
            select(orders).where(func.json_extract(orders.c.data, "$.status") == "paid"),
        ]
    return out


def write(path, dialect, pg):
    seen = []
    skipped = 0
    for stmt in statements(pg):
        try:
            sql = str(stmt.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
        except Exception:  # a value type with no literal form (JSONB dicts): bound only
            skipped += 1
            continue
        # What the driver sends: its `%%` escapes undone, one line.
        sql = " ".join(sql.replace("%%", "%").split("\n"))
        if sql not in seen:
            seen.append(sql)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n;;\n".join(seen) + "\n")
    print(f"{path}: {len(seen)} statements ({skipped} not renderable with inline values)")


here = os.path.dirname(os.path.abspath(__file__))
write(os.path.join(here, "benign-sqlalchemy-postgres.sql"), postgresql.dialect(), True)
write(os.path.join(here, "benign-sqlalchemy-mysql.sql"), mysql.dialect(), False)
