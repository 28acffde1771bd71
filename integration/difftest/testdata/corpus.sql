-- Differential corpus: every statement runs against the reference server
-- and through pgshard. Directives: -- ordered, -- refused SQLSTATE, -- write.

-- Point reads by key
SELECT * FROM users WHERE id = 1;

SELECT name, email FROM users WHERE id = 4242;

SELECT * FROM users WHERE id = 10001;

SELECT * FROM users WHERE 77 = id;

SELECT * FROM users WHERE id = '123'::bigint;

SELECT u.name FROM users u WHERE u.id = 9 AND u.active;

SELECT * FROM orders WHERE user_id = 17;

SELECT count(*), sum(amount) FROM orders WHERE user_id = 17;

-- IN lists and ANY
SELECT id, name FROM users WHERE id IN (1, 2, 3, 5000, 9999);

SELECT id FROM users WHERE id = ANY('{4,8,15,16,23,42}'::bigint[]);

SELECT id FROM users WHERE id IN (SELECT 5 UNION SELECT 6);

SELECT id FROM users WHERE id = 1 OR id = 7777;

-- Range scans
-- ordered
SELECT id, name FROM users WHERE id BETWEEN 100 AND 130 ORDER BY id;

SELECT count(*) FROM users WHERE id > 9000;

-- ordered
SELECT id FROM users WHERE id < 50 ORDER BY id DESC;

-- Joins on the key
SELECT u.name, o.amount FROM users u JOIN orders o ON o.user_id = u.id WHERE u.id = 31;

SELECT u.id, count(o.id) FROM users u LEFT JOIN orders o ON o.user_id = u.id WHERE u.id IN (31, 32, 33) GROUP BY u.id;

-- ordered
SELECT u.id, sum(o.amount) AS total FROM users u JOIN orders o ON o.user_id = u.id WHERE u.id BETWEEN 1 AND 20 GROUP BY u.id ORDER BY u.id;

-- Aggregates over everything
SELECT count(*) FROM users;

SELECT count(*) FROM orders;

SELECT count(email), count(country), count(score) FROM users;

SELECT sum(amount), min(amount), max(amount) FROM orders;

SELECT avg(amount) FROM orders;

SELECT avg(quantity) FROM orders;

SELECT sum(quantity), avg(score) FROM orders, (SELECT 1) x WHERE false;

SELECT min(name), max(name), min(created_at), max(created_at) FROM users;

SELECT bool_and(active), bool_or(active) FROM users;

SELECT count(*) FILTER (WHERE active) FROM users;

-- GROUP BY
SELECT country, count(*) FROM users GROUP BY country;

-- ordered
SELECT country, count(*), min(score), max(score) FROM users GROUP BY country ORDER BY country NULLS FIRST;

-- ordered
SELECT status, sum(amount), avg(amount), count(*) FROM orders GROUP BY status ORDER BY status;

SELECT status, quantity, count(*) FROM orders GROUP BY status, quantity;

-- ordered
SELECT active, country, count(*) FROM users GROUP BY active, country ORDER BY active, country;

-- ORDER BY / LIMIT / OFFSET
-- ordered
SELECT id, name FROM users ORDER BY id LIMIT 10;

-- ordered
SELECT id, name FROM users ORDER BY id DESC LIMIT 5 OFFSET 20;

-- ordered
SELECT id, score FROM users ORDER BY score DESC NULLS LAST, id LIMIT 15;

-- ordered
SELECT id, score FROM users ORDER BY score NULLS FIRST, id LIMIT 15;

-- ordered
SELECT id, amount FROM orders ORDER BY amount DESC, id LIMIT 25;

-- ordered
SELECT name FROM users ORDER BY name LIMIT 10 OFFSET 100;

-- ordered
SELECT id, created_at FROM orders ORDER BY created_at, id LIMIT 10;

-- ordered
SELECT user_id, id FROM orders ORDER BY user_id, id OFFSET 49990;

-- DISTINCT
SELECT DISTINCT country FROM users;

SELECT DISTINCT status, quantity FROM orders;

-- ordered
SELECT DISTINCT quantity FROM orders ORDER BY quantity;

-- Expressions, NULLs, text
SELECT id, coalesce(email, 'none') FROM users WHERE id BETWEEN 1 AND 40;

SELECT id FROM users WHERE email IS NULL AND id < 200;

SELECT id, upper(name), length(name) FROM users WHERE name LIKE 'name-0001%';

SELECT note FROM orders WHERE note IS NOT NULL AND user_id = 100;

-- Statements without sharded tables
SELECT 1;

SELECT 1 + 1 AS two, 'x' AS x;

SELECT count(*) FROM pg_catalog.pg_class WHERE relname IN ('users', 'orders');

SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'users' ORDER BY ordinal_position;

-- Writes, then reads
-- write
INSERT INTO users VALUES (20001, 'new-a', 'a@example.com', 'DE', 1.50, true, '2024-06-01T00:00:00Z');

-- write
INSERT INTO users VALUES (20002, 'new-b', NULL, NULL, NULL, false, '2024-06-02T00:00:00Z'), (20003, 'new-c', 'c@example.com', 'FR', 99.99, true, '2024-06-03T00:00:00Z');

SELECT * FROM users WHERE id IN (20001, 20002, 20003);

-- write
UPDATE users SET score = coalesce(score, 0) + 1 WHERE id = 20002;

SELECT score FROM users WHERE id = 20002;

-- write
INSERT INTO orders VALUES (90001, 20001, 10.00, 2, 'new', NULL, '2024-06-04T00:00:00Z') RETURNING id, amount;

-- write
INSERT INTO orders VALUES (90001, 20001, 11.00, 3, 'paid', 'again', '2024-06-05T00:00:00Z') ON CONFLICT (user_id, id) DO UPDATE SET amount = EXCLUDED.amount;

SELECT amount FROM orders WHERE user_id = 20001;

-- write
DELETE FROM orders WHERE user_id = 20001;

-- write
UPDATE users SET active = NOT active WHERE id BETWEEN 500 AND 520;

SELECT count(*) FROM users WHERE active;

-- write
DELETE FROM users WHERE id = 20003;

SELECT count(*) FROM users;
