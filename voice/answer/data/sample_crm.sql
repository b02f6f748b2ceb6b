-- Demo CRM for the answer engine (schema documented in voice/answer/crm.py).
CREATE TABLE customers (
    id                 TEXT PRIMARY KEY,
    name               TEXT NOT NULL,
    surname            TEXT NOT NULL,
    honorific          TEXT NOT NULL,
    name_en            TEXT DEFAULT '',
    surname_en         TEXT DEFAULT '',
    honorific_en       TEXT DEFAULT '',
    preferred_language TEXT DEFAULT 'yue-Hant-HK',
    phone              TEXT DEFAULT ''
);
CREATE TABLE orders (
    id          TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL REFERENCES customers(id),
    status      TEXT NOT NULL,
    item        TEXT DEFAULT '',
    eta         TEXT DEFAULT '',
    updated_at  TEXT DEFAULT ''
);
CREATE INDEX orders_customer ON orders(customer_id);

INSERT INTO customers VALUES
 ('C1001', '陳大文', '陳', '先生', 'Chan Tai Man', 'Chan', 'Mr', 'yue-Hant-HK', '91234567'),
 ('C1002', '李嘉欣', '李', '小姐', 'Lee Ka Yan', 'Lee', 'Ms', 'yue-Hant-HK', '62345678'),
 ('C1003', 'Emily Wong', '黃', '小姐', 'Emily Wong', 'Wong', 'Ms', 'en', '53456789'),
 ('C1004', '張志明', '張', '先生', 'Cheung Chi Ming', 'Cheung', 'Mr', 'yue-Hant-HK', '94567890');

INSERT INTO orders VALUES
 ('85321', 'C1001', 'out_for_delivery', 'iPhone 16 256GB', '2025-06-03', '2025-06-02T09:15:00'),
 ('85177', 'C1001', 'delivered', '5G 路由器', '2025-05-20', '2025-05-20T14:02:00'),
 ('A12345', 'C1002', 'shipped', 'AirPods Pro 2', '2025-06-04', '2025-06-01T18:40:00'),
 ('A12399', 'C1002', 'refund_pending', '手機保護殼', '', '2025-05-28T11:00:00'),
 ('90210', 'C1003', 'processing', 'Samsung Galaxy S25', '2025-06-06', '2025-06-02T08:00:00'),
 ('77001', 'C1004', 'cancelled', '智能手錶', '', '2025-05-15T10:30:00');
