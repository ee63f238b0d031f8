SELECT users.id, users.email, users.name, users.bio, users.active, users.created_at, users.deleted_at  FROM users  WHERE users.email = 'ann@example.com'   LIMIT 1
;;
SELECT users.id  FROM users  WHERE users.name LIKE '%ann@example.com%'
;;
SELECT users.id  FROM users  WHERE (users.name LIKE concat('%', 'ann@example.com', '%') ESCAPE '/')
;;
SELECT users.id  FROM users  WHERE (users.name LIKE concat('ann@example.com', '%') ESCAPE '/')
;;
INSERT INTO users (email, name, bio, active, created_at) VALUES ('ann@example.com', 'ann@example.com', 'ann@example.com', true, '2024-05-01 10:00:00')
;;
UPDATE users SET bio='ann@example.com' WHERE users.id = 5
;;
SELECT users.id  FROM users  WHERE users.name = 'ann@example.com' OR users.email = 'ann@example.com'
;;
SELECT users.id, users.email, users.name, users.bio, users.active, users.created_at, users.deleted_at  FROM users  WHERE users.email = 'O''Brien'   LIMIT 1
;;
SELECT users.id  FROM users  WHERE users.name LIKE '%O''Brien%'
;;
SELECT users.id  FROM users  WHERE (users.name LIKE concat('%', 'O''Brien', '%') ESCAPE '/')
;;
SELECT users.id  FROM users  WHERE (users.name LIKE concat('O''Brien', '%') ESCAPE '/')
;;
INSERT INTO users (email, name, bio, active, created_at) VALUES ('O''Brien', 'O''Brien', 'O''Brien', true, '2024-05-01 10:00:00')
;;
UPDATE users SET bio='O''Brien' WHERE users.id = 5
;;
SELECT users.id  FROM users  WHERE users.name = 'O''Brien' OR users.email = 'O''Brien'
;;
SELECT users.id, users.email, users.name, users.bio, users.active, users.created_at, users.deleted_at  FROM users  WHERE users.email = 'it''s 1 or 2 = 3 -- really'   LIMIT 1
;;
SELECT users.id  FROM users  WHERE users.name LIKE '%it''s 1 or 2 = 3 -- really%'
;;
SELECT users.id  FROM users  WHERE (users.name LIKE concat('%', 'it''s 1 or 2 = 3 -- really', '%') ESCAPE '/')
;;
SELECT users.id  FROM users  WHERE (users.name LIKE concat('it''s 1 or 2 = 3 -- really', '%') ESCAPE '/')
;;
INSERT INTO users (email, name, bio, active, created_at) VALUES ('it''s 1 or 2 = 3 -- really', 'it''s 1 or 2 = 3 -- really', 'it''s 1 or 2 = 3 -- really', true, '2024-05-01 10:00:00')
;;
UPDATE users SET bio='it''s 1 or 2 = 3 -- really' WHERE users.id = 5
;;
SELECT users.id  FROM users  WHERE users.name = 'it''s 1 or 2 = 3 -- really' OR users.email = 'it''s 1 or 2 = 3 -- really'
;;
SELECT users.id, users.email, users.name, users.bio, users.active, users.created_at, users.deleted_at  FROM users  WHERE users.email = 'Tom & Jerry; select the best'   LIMIT 1
;;
SELECT users.id  FROM users  WHERE users.name LIKE '%Tom & Jerry; select the best%'
;;
SELECT users.id  FROM users  WHERE (users.name LIKE concat('%', 'Tom & Jerry; select the best', '%') ESCAPE '/')
;;
SELECT users.id  FROM users  WHERE (users.name LIKE concat('Tom & Jerry; select the best', '%') ESCAPE '/')
;;
INSERT INTO users (email, name, bio, active, created_at) VALUES ('Tom & Jerry; select the best', 'Tom & Jerry; select the best', 'Tom & Jerry; select the best', true, '2024-05-01 10:00:00')
;;
UPDATE users SET bio='Tom & Jerry; select the best' WHERE users.id = 5
;;
SELECT users.id  FROM users  WHERE users.name = 'Tom & Jerry; select the best' OR users.email = 'Tom & Jerry; select the best'
;;
SELECT users.id, users.email, users.name, users.bio, users.active, users.created_at, users.deleted_at  FROM users  WHERE users.email = 'He said "hi" (twice)'   LIMIT 1
;;
SELECT users.id  FROM users  WHERE users.name LIKE '%He said "hi" (twice)%'
;;
SELECT users.id  FROM users  WHERE (users.name LIKE concat('%', 'He said "hi" (twice)', '%') ESCAPE '/')
;;
SELECT users.id  FROM users  WHERE (users.name LIKE concat('He said "hi" (twice)', '%') ESCAPE '/')
;;
INSERT INTO users (email, name, bio, active, created_at) VALUES ('He said "hi" (twice)', 'He said "hi" (twice)', 'He said "hi" (twice)', true, '2024-05-01 10:00:00')
;;
UPDATE users SET bio='He said "hi" (twice)' WHERE users.id = 5
;;
SELECT users.id  FROM users  WHERE users.name = 'He said "hi" (twice)' OR users.email = 'He said "hi" (twice)'
;;
SELECT users.id, users.email, users.name, users.bio, users.active, users.created_at, users.deleted_at  FROM users  WHERE users.email = '50% off -- today only!'   LIMIT 1
;;
SELECT users.id  FROM users  WHERE users.name LIKE '%50% off -- today only!%'
;;
SELECT users.id  FROM users  WHERE (users.name LIKE concat('%', '50/% off -- today only!', '%') ESCAPE '/')
;;
SELECT users.id  FROM users  WHERE (users.name LIKE concat('50/% off -- today only!', '%') ESCAPE '/')
;;
INSERT INTO users (email, name, bio, active, created_at) VALUES ('50% off -- today only!', '50% off -- today only!', '50% off -- today only!', true, '2024-05-01 10:00:00')
;;
UPDATE users SET bio='50% off -- today only!' WHERE users.id = 5
;;
SELECT users.id  FROM users  WHERE users.name = '50% off -- today only!' OR users.email = '50% off -- today only!'
;;
SELECT users.id, users.email, users.name, users.bio, users.active, users.created_at, users.deleted_at  FROM users  WHERE users.email = 'a/b/c#frag?x=1&y=2'   LIMIT 1
;;
SELECT users.id  FROM users  WHERE users.name LIKE '%a/b/c#frag?x=1&y=2%'
;;
SELECT users.id  FROM users  WHERE (users.name LIKE concat('%', 'a//b//c#frag?x=1&y=2', '%') ESCAPE '/')
;;
SELECT users.id  FROM users  WHERE (users.name LIKE concat('a//b//c#frag?x=1&y=2', '%') ESCAPE '/')
;;
INSERT INTO users (email, name, bio, active, created_at) VALUES ('a/b/c#frag?x=1&y=2', 'a/b/c#frag?x=1&y=2', 'a/b/c#frag?x=1&y=2', true, '2024-05-01 10:00:00')
;;
UPDATE users SET bio='a/b/c#frag?x=1&y=2' WHERE users.id = 5
;;
SELECT users.id  FROM users  WHERE users.name = 'a/b/c#frag?x=1&y=2' OR users.email = 'a/b/c#frag?x=1&y=2'
;;
SELECT users.id, users.email, users.name, users.bio, users.active, users.created_at, users.deleted_at  FROM users  WHERE users.email = 'multi line; text'   LIMIT 1
;;
SELECT users.id  FROM users  WHERE users.name LIKE '%multi line; text%'
;;
SELECT users.id  FROM users  WHERE (users.name LIKE concat('%', 'multi line; text', '%') ESCAPE '/')
;;
SELECT users.id  FROM users  WHERE (users.name LIKE concat('multi line; text', '%') ESCAPE '/')
;;
INSERT INTO users (email, name, bio, active, created_at) VALUES ('multi line; text', 'multi line; text', 'multi line; text', true, '2024-05-01 10:00:00')
;;
UPDATE users SET bio='multi line; text' WHERE users.id = 5
;;
SELECT users.id  FROM users  WHERE users.name = 'multi line; text' OR users.email = 'multi line; text'
;;
SELECT users.id, users.email, users.name, users.bio, users.active, users.created_at, users.deleted_at  FROM users  WHERE users.email = 'union station'   LIMIT 1
;;
SELECT users.id  FROM users  WHERE users.name LIKE '%union station%'
;;
SELECT users.id  FROM users  WHERE (users.name LIKE concat('%', 'union station', '%') ESCAPE '/')
;;
SELECT users.id  FROM users  WHERE (users.name LIKE concat('union station', '%') ESCAPE '/')
;;
INSERT INTO users (email, name, bio, active, created_at) VALUES ('union station', 'union station', 'union station', true, '2024-05-01 10:00:00')
;;
UPDATE users SET bio='union station' WHERE users.id = 5
;;
SELECT users.id  FROM users  WHERE users.name = 'union station' OR users.email = 'union station'
;;
SELECT users.id, users.email, users.name, users.bio, users.active, users.created_at, users.deleted_at  FROM users  WHERE users.email = '''quoted'''   LIMIT 1
;;
SELECT users.id  FROM users  WHERE users.name LIKE '%''quoted''%'
;;
SELECT users.id  FROM users  WHERE (users.name LIKE concat('%', '''quoted''', '%') ESCAPE '/')
;;
SELECT users.id  FROM users  WHERE (users.name LIKE concat('''quoted''', '%') ESCAPE '/')
;;
INSERT INTO users (email, name, bio, active, created_at) VALUES ('''quoted''', '''quoted''', '''quoted''', true, '2024-05-01 10:00:00')
;;
UPDATE users SET bio='''quoted''' WHERE users.id = 5
;;
SELECT users.id  FROM users  WHERE users.name = '''quoted''' OR users.email = '''quoted'''
;;
SELECT users.id, users.email, users.name, users.bio, users.active, users.created_at, users.deleted_at  FROM users  WHERE users.email = 'back\\slash'   LIMIT 1
;;
SELECT users.id  FROM users  WHERE users.name LIKE '%back\\slash%'
;;
SELECT users.id  FROM users  WHERE (users.name LIKE concat('%', 'back\\slash', '%') ESCAPE '/')
;;
SELECT users.id  FROM users  WHERE (users.name LIKE concat('back\\slash', '%') ESCAPE '/')
;;
INSERT INTO users (email, name, bio, active, created_at) VALUES ('back\\slash', 'back\\slash', 'back\\slash', true, '2024-05-01 10:00:00')
;;
UPDATE users SET bio='back\\slash' WHERE users.id = 5
;;
SELECT users.id  FROM users  WHERE users.name = 'back\\slash' OR users.email = 'back\\slash'
;;
SELECT users.id, users.email, users.name, users.bio, users.active, users.created_at, users.deleted_at  FROM users  WHERE users.id = 42
;;
SELECT users.id, users.email, users.name, users.bio, users.active, users.created_at, users.deleted_at  FROM users  WHERE users.id IN (1, 2, 3, 17, 42)
;;
SELECT users.id, users.email, users.name, users.bio, users.active, users.created_at, users.deleted_at  FROM users  WHERE users.id IN (NULL) AND (1 != 1)
;;
SELECT users.id, users.email, users.name, users.bio, users.active, users.created_at, users.deleted_at  FROM users  WHERE (users.id NOT IN (NULL) OR (1 = 1))
;;
SELECT users.id, users.email, users.name, users.bio, users.active, users.created_at, users.deleted_at  FROM users  WHERE users.name IN ('ed', 'wendy', 'jack')
;;
SELECT users.id, users.email, users.name, users.bio, users.active, users.created_at, users.deleted_at  FROM users  WHERE users.active = true AND users.deleted_at IS NULL
;;
SELECT users.id, users.email, users.name, users.bio, users.active, users.created_at, users.deleted_at  FROM users  WHERE users.deleted_at IS NOT NULL
;;
SELECT users.id, users.email, users.name, users.bio, users.active, users.created_at, users.deleted_at  FROM users  WHERE users.active = 0
;;
SELECT users.id, users.email, users.name, users.bio, users.active, users.created_at, users.deleted_at  FROM users  WHERE users.created_at BETWEEN '2024-05-01 10:00:00' AND '2024-05-31 10:00:00'
;;
SELECT users.id, users.email, users.name, users.bio, users.active, users.created_at, users.deleted_at  FROM users  WHERE true = 1
;;
SELECT users.id, users.email, users.name, users.bio, users.active, users.created_at, users.deleted_at  FROM users  WHERE false = 1
;;
SELECT users.id, users.email, users.name, users.bio, users.active, users.created_at, users.deleted_at  FROM users
;;
SELECT users.id, users.email, users.name, users.bio, users.active, users.created_at, users.deleted_at  FROM users  WHERE users.id = 3
;;
SELECT users.id, users.email, users.name, users.bio, users.active, users.created_at, users.deleted_at  FROM users ORDER BY users.created_at DESC   LIMIT 40, 20
;;
SELECT users.id, count(orders.id) AS count_1  FROM users INNER JOIN orders ON users.id = orders.user_id GROUP BY users.id  HAVING count(orders.id) > 5
;;
SELECT users.id  FROM users LEFT OUTER JOIN orders ON orders.user_id = users.id AND orders.status = 'paid'  WHERE orders.id IS NULL
;;
SELECT users.id  FROM users  WHERE EXISTS (SELECT *  FROM orders  WHERE orders.user_id = users.id)
;;
SELECT users.id  FROM users  WHERE users.id IN (SELECT orders.user_id  FROM orders  WHERE orders.amount > 100)
;;
SELECT DISTINCT lower(users.email) AS lower_1  FROM users
;;
SELECT users.id, row_number() OVER (PARTITION BY orders.user_id ORDER BY orders.created_at DESC) AS anon_1  FROM users INNER JOIN orders ON users.id = orders.user_id
;;
SELECT orders.user_id, sum(orders.amount) OVER (PARTITION BY orders.user_id ORDER BY orders.created_at) AS anon_1  FROM orders
;;
SELECT CASE WHEN (orders.amount > 100) THEN 'big' WHEN (orders.amount > 10) THEN 'medium' ELSE 'small' END AS anon_1, count(*) AS count_1  FROM orders GROUP BY orders.amount
;;
SELECT CAST(orders.amount AS SIGNED INTEGER) AS amount, coalesce(orders.status, 'none') AS coalesce_1  FROM orders
;;
SELECT users.id, 'x' AS kind  FROM users
;;
SELECT users.id, 'user' AS anon_1  FROM users UNION ALL SELECT orders.id, 'order' AS anon_2  FROM orders  WHERE orders.amount > 1
;;
SELECT orders.id, orders.user_id, orders.status, orders.amount, orders.data, orders.created_at  FROM orders  WHERE CASE JSON_EXTRACT(JSON_EXTRACT(orders.data, '$."customer"'), '$."country"') WHEN 'null' THEN NULL ELSE JSON_UNQUOTE(JSON_EXTRACT(JSON_EXTRACT(orders.data, '$."customer"'), '$."country"')) END = 'NL'
;;
DELETE FROM orders WHERE orders.created_at < '2024-05-01 10:00:00'
;;
UPDATE orders SET status='refunded', amount=(orders.amount - 10) WHERE orders.id = 9
;;
INSERT INTO order_items (order_id, sku, qty) VALUES (1, 'A-1', 2), (1, 'B''2', 1)
;;
SELECT order_items.sku, sum(order_items.qty) AS sum_1  FROM order_items GROUP BY order_items.sku ORDER BY sum(order_items.qty) DESC
;;
SELECT users.id, users.email, users.name, users.bio, users.active, users.created_at, users.deleted_at  FROM users  WHERE users.email REGEXP '^[a-z]+@example\\.com$'
;;
SELECT count(*) AS count_1  FROM users  WHERE users.active IS true
;;
WITH RECURSIVE tree(id, parent_id) AS  (SELECT categories.id AS id, categories.parent_id AS parent_id  FROM categories  WHERE categories.parent_id IS NULL UNION ALL SELECT categories.id AS id, categories.parent_id AS parent_id  FROM categories INNER JOIN tree ON categories.parent_id = tree.id)  SELECT tree.id, tree.parent_id  FROM tree
;;
WITH recent AS  (SELECT orders.user_id AS user_id, max(orders.created_at) AS last  FROM orders GROUP BY orders.user_id)  SELECT users.email  FROM users INNER JOIN recent ON recent.user_id = users.id  WHERE recent.last > '2024-05-01 10:00:00'
;;
SELECT v.id, v.name  FROM (VALUES (1, 'a'), (2, 'it''s')) AS v (id, name)
;;
INSERT INTO users (id, email) VALUES (1, 'x@example.com') ON DUPLICATE KEY UPDATE email = %s
;;
SELECT users.id, users.email, users.name, users.bio, users.active, users.created_at, users.deleted_at  FROM users   LIMIT 1 FOR UPDATE
;;
SELECT orders.id, orders.user_id, orders.status, orders.amount, orders.data, orders.created_at  FROM orders  WHERE json_extract(orders.data, '$.status') = 'paid'
