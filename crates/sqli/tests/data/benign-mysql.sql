SELECT `users`.* FROM `users` WHERE `users`.`id` = 1 LIMIT 1
;;
SELECT `users`.* FROM `users` WHERE `users`.`email` = 'ann@example.com' AND `users`.`deleted_at` IS NULL LIMIT 1
;;
SELECT `posts`.* FROM `posts` WHERE `posts`.`author_id` IN (1, 2, 3) ORDER BY `posts`.`created_at` DESC LIMIT 20 OFFSET 40
;;
INSERT INTO `comments` (`post_id`, `author`, `body`) VALUES (9, 'Miles O\'Brien', 'Great post -- thanks! I\'d say: a) use (parens); b) don\'t = do # really')
;;
UPDATE `users` SET `sign_in_count` = `sign_in_count` + 1, `last_login_at` = '2024-05-01 10:00:00' WHERE `users`.`id` = 5
;;
DELETE FROM `sessions` WHERE `sessions`.`updated_at` < DATE_SUB(NOW(), INTERVAL 30 DAY)
;;
SELECT `auth_user`.`id`, `auth_user`.`password` FROM `auth_user` WHERE `auth_user`.`username` = 'admin' LIMIT 21
;;
SELECT `shop_order`.`id` FROM `shop_order` WHERE JSON_EXTRACT(`shop_order`.`data`, '$.customer.country') = 'NL' AND `shop_order`.`data`->>'$.status' = 'paid'
;;
SELECT id FROM shop_order WHERE JSON_CONTAINS(data, '"sale"', '$.tags') AND JSON_KEYS(data) IS NOT NULL
;;
SELECT user_id, amount, SUM(amount) OVER (PARTITION BY user_id ORDER BY created_at) AS running FROM payments
;;
WITH recent AS (SELECT user_id, MAX(created_at) AS last_seen FROM events GROUP BY user_id) SELECT u.email FROM recent JOIN users u ON u.id = recent.user_id WHERE recent.last_seen > NOW() - INTERVAL 7 DAY
;;
SELECT /* app:web controller:users action:show */ `users`.* FROM `users` WHERE `users`.`id` = 3
;;
SELECT * FROM orders WHERE customer_id = 5 /*controller='orders',action='index',framework='django%3A4.2'*/
;;
SELECT /*+ MAX_EXECUTION_TIME(1000) */ id FROM orders WHERE status = 'open'
;;
/*!40101 SET NAMES utf8mb4 */
;;
/*!40103 SET TIME_ZONE='+00:00' */
;;
SELECT @@session.transaction_isolation, @@version_comment
;;
SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'users'
;;
SELECT column_name, data_type, is_nullable, column_default FROM information_schema.columns WHERE table_schema = database() AND table_name = 'orders' ORDER BY ordinal_position
;;
SELECT kcu.COLUMN_NAME, kcu.REFERENCED_TABLE_NAME FROM information_schema.KEY_COLUMN_USAGE kcu WHERE kcu.TABLE_SCHEMA = DATABASE() AND kcu.TABLE_NAME = 'orders' AND kcu.REFERENCED_TABLE_NAME IS NOT NULL
;;
SHOW FULL FIELDS FROM `users`
;;
SHOW TABLES LIKE 'schema_migrations'
;;
SET NAMES utf8mb4 COLLATE utf8mb4_unicode_ci
;;
SET @@SESSION.sql_mode = CONCAT(CONCAT(@@sql_mode, ',STRICT_ALL_TABLES'), ',NO_AUTO_VALUE_ON_ZERO')
;;
SET autocommit=1
;;
START TRANSACTION
;;
COMMIT
;;
SELECT GET_LOCK('migrations', 10)
;;
SELECT RELEASE_LOCK('migrations')
;;
select user0_.id as id1_0_ from app_user user0_ where user0_.email=? and user0_.active=1
;;
select user0_.id as id1_0_ from app_user user0_ where 1=1 and user0_.role in (? , ?) order by user0_.id asc limit ?
;;
INSERT INTO messages (body) VALUES ('Meet at 5 (or 6); bring snacks & drinks -- Sam')
;;
INSERT INTO messages (body) VALUES ("double \"quoted\" text, it's fine; really -- ok?")
;;
INSERT INTO messages (body) VALUES ('#hashtag #sql; a && b || c')
;;
INSERT INTO events (payload) VALUES ('{"type": "click", "target": "#buy-now", "meta": {"ref": "a=b;c=d"}}')
;;
INSERT INTO products (name, description) VALUES ('12" pizza', 'Tomato & cheese (vegan option); 30% off -- today only')
;;
UPDATE users SET bio = 'Dev at ACME (2019-2024); likes C/C++ & Rust; says \"hello\"' WHERE id = 12
;;
SELECT id FROM tasks WHERE (status = 'open' OR status = 'blocked') AND priority >= 3
;;
SELECT CASE WHEN amount > 100 THEN 'big' ELSE 'small' END AS size, COUNT(*) FROM orders GROUP BY 1
;;
SELECT id, FLOOR(RAND() * 100) AS bucket FROM users ORDER BY RAND() LIMIT 5
;;
SELECT HEX(id), UNHEX(REPLACE(UUID(), '-', '')) FROM things WHERE id = 0x11E9A5B2C3D4
;;
SELECT CONCAT(first_name, ' ', last_name) AS name, CHAR_LENGTH(bio) FROM users WHERE name REGEXP '^[a-z]+$'
;;
SELECT IF(qty > 0, 'in stock', 'sold out') FROM stock WHERE sku = 'A-1'
;;
SELECT 'a' AS kind, id FROM a UNION ALL SELECT 'b', id FROM b WHERE b.flag = 1
;;
INSERT INTO t (a, b) VALUES (1, 'x') ON DUPLICATE KEY UPDATE b = VALUES(b)
;;
REPLACE INTO kv (k, v) VALUES ('feature:new-ui', 'on')
;;
LOAD DATA LOCAL INFILE '/tmp/import.csv' INTO TABLE staging FIELDS TERMINATED BY ','
;;
SELECT * FROM users WHERE name LIKE 'o\'%' ESCAPE '\\'
;;
SELECT COUNT(*) FROM `orders` WHERE `orders`.`created_at` BETWEEN '2024-01-01' AND '2024-01-31'
;;
SELECT id FROM docs WHERE MATCH(title, body) AGAINST('union select tutorial' IN NATURAL LANGUAGE MODE)
