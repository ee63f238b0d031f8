SELECT "users"."id", "users"."email", "users"."created_at" FROM "users" WHERE "users"."id" = $1 LIMIT $2
;;
SELECT "users".* FROM "users" WHERE "users"."email" = 'ann@example.com' LIMIT 1
;;
SELECT "posts".* FROM "posts" WHERE "posts"."author_id" IN (1, 2, 3, 17, 42) AND "posts"."published" = TRUE ORDER BY "posts"."created_at" DESC LIMIT 20 OFFSET 40
;;
SELECT "posts".* FROM "posts" WHERE "posts"."title" ILIKE '%o''reilly%' ESCAPE '\'
;;
SELECT COUNT(*) FROM "comments" WHERE "comments"."post_id" = 9 AND ("comments"."body" LIKE '%--%' OR "comments"."body" LIKE '%;%')
;;
INSERT INTO "comments" ("post_id", "author", "body", "created_at") VALUES (9, 'Miles O''Brien', 'Great post -- thanks! I''d say 1 or 2 things: a) use (parens); b) don''t = do', '2024-05-01 10:00:00') RETURNING "id"
;;
UPDATE "users" SET "last_login_at" = '2024-05-01 10:00:00.123456', "sign_in_count" = "sign_in_count" + 1 WHERE "users"."id" = 5
;;
DELETE FROM "sessions" WHERE "sessions"."updated_at" < NOW() - INTERVAL '30 days'
;;
SELECT "auth_user"."id", "auth_user"."password", "auth_user"."last_login", "auth_user"."is_superuser", "auth_user"."username" FROM "auth_user" WHERE "auth_user"."username" = 'admin' LIMIT 21
;;
SELECT "blog_entry"."id", "blog_entry"."headline" FROM "blog_entry" INNER JOIN "blog_blog" ON ("blog_entry"."blog_id" = "blog_blog"."id") WHERE ("blog_blog"."name" = 'Beatles Blog' AND "blog_entry"."pub_date" BETWEEN '2005-01-01'::date AND '2005-12-31'::date) ORDER BY "blog_entry"."pub_date" DESC
;;
SELECT "shop_order"."id", "shop_order"."data" -> 'items' AS "items" FROM "shop_order" WHERE ("shop_order"."data" -> 'customer' ->> 'country') = 'NL' AND "shop_order"."data" @> '{"status": "paid"}'::jsonb
;;
SELECT "shop_order"."id" FROM "shop_order" WHERE "shop_order"."data" ? 'coupon' AND "shop_order"."tags" && ARRAY['sale', 'b2b']::varchar[]
;;
SELECT DISTINCT ON ("t"."user_id") "t"."user_id", "t"."amount" FROM "transactions" "t" ORDER BY "t"."user_id", "t"."created_at" DESC
;;
WITH recent AS (SELECT user_id, max(created_at) AS last_seen FROM events WHERE created_at > now() - interval '7 days' GROUP BY user_id), ranked AS (SELECT user_id, last_seen, rank() OVER (ORDER BY last_seen DESC) AS r FROM recent) SELECT u.email, ranked.r FROM ranked JOIN users u ON u.id = ranked.user_id WHERE ranked.r <= 10
;;
WITH RECURSIVE tree(id, parent_id, depth) AS (SELECT id, parent_id, 0 FROM categories WHERE parent_id IS NULL UNION ALL SELECT c.id, c.parent_id, t.depth + 1 FROM categories c JOIN tree t ON c.parent_id = t.id) SELECT * FROM tree ORDER BY depth
;;
SELECT user_id, amount, sum(amount) OVER (PARTITION BY user_id ORDER BY created_at ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS running, lag(amount, 1) OVER w AS prev FROM payments WINDOW w AS (PARTITION BY user_id ORDER BY created_at)
;;
SELECT count(*) FILTER (WHERE status = 'failed') AS failed, count(*) AS total FROM jobs WHERE queue = 'default'
;;
SELECT /* app:web controller:users action:show */ "users".* FROM "users" WHERE "users"."id" = 3
;;
SELECT "users".* FROM "users" WHERE "users"."id" = 3 /*application:Rails,controller:users,action:show,db_host:db1*/
;;
SELECT * FROM orders WHERE customer_id = $1 /*controller='orders',action='index',framework='django%3A4.2',route='%5Eorders/%24',traceparent='00-5bd66ef5095369c7b0d1f8f4bd33716a-c532cb4098ac3dd2-01'*/
;;
-- load the dashboard
SELECT id, name FROM projects WHERE owner_id = 7
;;
SELECT users.id AS users_id, users.name AS users_name FROM users WHERE users.name IN ('ed', 'wendy', 'jack') ORDER BY users.id
;;
SELECT users.id FROM users WHERE 1 != 1
;;
SELECT users.id FROM users WHERE users.id IN (NULL) AND (1 != 1)
;;
SELECT anon_1.users_id FROM (SELECT users.id AS users_id FROM users WHERE users.name LIKE 'e%' || '_' ESCAPE '/') AS anon_1 LIMIT 10
;;
INSERT INTO users (name, fullname, nickname) VALUES ('ed', 'Ed Jones', 'eddie'), ('wendy', 'Wendy Williams', 'windy') ON CONFLICT (name) DO UPDATE SET fullname = EXCLUDED.fullname
;;
select user0_.id as id1_0_, user0_.email as email2_0_ from app_user user0_ where user0_.email=$1 and user0_.active=true
;;
select user0_.id as id1_0_ from app_user user0_ where 1=1 and (user0_.role in ($1 , $2)) order by user0_.id asc limit $3
;;
select count(order0_.id) as col_0_0_ from orders order0_ cross join customer customer1_ where order0_.customer_id=customer1_.id and (customer1_.name like $1 escape '!')
;;
SELECT "schema_migrations"."version" FROM "schema_migrations" ORDER BY "schema_migrations"."version" ASC
;;
SELECT t.oid, t.typname FROM pg_type as t WHERE t.typname IN ('int2', 'int4', 'int8', 'oid', 'float4', 'float8', 'numeric', 'bool', 'timestamp', 'timestamptz')
;;
SELECT t.oid, t.typname, t.typelem, t.typdelim, t.typinput, r.rngsubtype, t.typtype, t.typbasetype FROM pg_type as t LEFT JOIN pg_range as r ON oid = rngtypid WHERE t.typtype IN ('r', 'e', 'd') OR t.typinput = 'array_in(cstring,oid,integer)'::regprocedure OR t.typelem != 0
;;
SELECT c.relname FROM pg_class c LEFT JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = ANY (current_schemas(false)) AND c.relname = 'users' AND c.relkind IN ('r','v','m','p','f')
;;
SELECT a.attname, format_type(a.atttypid, a.atttypmod), pg_get_expr(d.adbin, d.adrelid), a.attnotnull, a.atttypid, a.atttypmod, c.collname, col_description(a.attrelid, a.attnum) AS comment FROM pg_attribute a LEFT JOIN pg_attrdef d ON a.attrelid = d.adrelid AND a.attnum = d.adnum LEFT JOIN pg_type t ON a.atttypid = t.oid LEFT JOIN pg_collation c ON a.attcollation = c.oid AND a.attcollation <> t.typcollation WHERE a.attrelid = '"users"'::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum
;;
SELECT c.relname, CASE WHEN c.relispartition THEN 'p' WHEN c.relkind IN ('m', 'v') THEN 'v' ELSE 't' END, obj_description(c.oid, 'pg_class') FROM pg_catalog.pg_class c LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('f', 'm', 'p', 'r', 'v') AND n.nspname NOT IN ('pg_catalog', 'pg_toast') AND pg_catalog.pg_table_is_visible(c.oid)
;;
SELECT kcu.column_name, ccu.table_name AS referenced_table, ccu.column_name AS referenced_column FROM information_schema.constraint_column_usage ccu INNER JOIN information_schema.key_column_usage kcu ON ccu.constraint_name = kcu.constraint_name WHERE kcu.table_schema = 'public' AND kcu.table_name = 'orders'
;;
select relname from pg_class c join pg_namespace n on n.oid=c.relnamespace where pg_catalog.pg_table_is_visible(c.oid) and n.nspname=$1 and relname=$2
;;
SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE' AND table_name NOT IN (SELECT tablename FROM pg_catalog.pg_tables WHERE schemaname = 'pg_catalog')
;;
SET search_path TO "$user", public
;;
SET statement_timeout = '5s'
;;
SHOW server_version
;;
BEGIN
;;
BEGIN ISOLATION LEVEL REPEATABLE READ
;;
SAVEPOINT active_record_1
;;
RELEASE SAVEPOINT active_record_1
;;
COMMIT
;;
ROLLBACK
;;
SELECT pg_advisory_lock(5432)
;;
SELECT pg_try_advisory_xact_lock(123456789)
;;
SELECT nextval('orders_id_seq')
;;
LISTEN events
;;
NOTIFY events, 'order 5 paid; ship it'
;;
SELECT 1
;;
SELECT version()
;;
SELECT current_database(), current_user, current_setting('server_version_num')
;;
drop table if exists pgbench_accounts, pgbench_branches, pgbench_history, pgbench_tellers
;;
create table pgbench_tellers(tid int not null,bid int,tbalance int,filler char(84)) with (fillfactor=100)
;;
create table pgbench_accounts(aid int not null,bid int,abalance int,filler char(84)) with (fillfactor=100)
;;
copy pgbench_accounts from stdin with (freeze on)
;;
insert into pgbench_branches(bid,bbalance) values(1,0)
;;
vacuum analyze pgbench_branches
;;
alter table pgbench_branches add primary key (bid)
;;
truncate table pgbench_accounts, pgbench_branches, pgbench_history, pgbench_tellers
;;
SELECT id, title FROM articles WHERE to_tsvector('english', body) @@ plainto_tsquery('english', 'union select statements explained') ORDER BY ts_rank(to_tsvector('english', body), plainto_tsquery('english', 'union select')) DESC LIMIT 10
;;
INSERT INTO articles (title, body) VALUES ('SQL tips', 'Use WHERE 1=1 to build filters; never paste input into SQL (bind it); quote with '' not \ -- see https://example.com/a?b=1&c=2#frag')
;;
INSERT INTO snippets (lang, code) VALUES ('python', E'def f(x):\n    return x == 1 and y != 2  # done\n')
;;
INSERT INTO snippets (lang, code) VALUES ('sql', $$SELECT * FROM t WHERE a = 'b'; -- comment$$)
;;
INSERT INTO messages (body) VALUES ('Meet at 5 (or 6); bring snacks & drinks -- Sam')
;;
INSERT INTO messages (body) VALUES ('"quoted" text, it''s fine; really -- ok?')
;;
INSERT INTO messages (body) VALUES ('a <b>bold</b> move => x >= 3 && y <= 4 || z')
;;
INSERT INTO messages (body) VALUES ('I''m sure you''ll love it; the "best" -- ever')
;;
INSERT INTO events (payload) VALUES ('{"type": "click", "target": "#buy-now", "meta": {"ref": "a=b;c=d", "note": "it''s ok"}}')
;;
INSERT INTO products (name, description) VALUES ('12" pizza', 'Tomato & cheese (vegan option); 30% off -- today only')
;;
INSERT INTO addresses (line1, city) VALUES ('Flat 3; 12 O''Connell St.', 'Dublin')
;;
UPDATE users SET bio = 'Dev at ACME (2019-2024); likes C/C++ & Rust; says "hello, world"' WHERE id = 12
;;
SELECT * FROM users WHERE lower(email) = lower($1) AND deleted_at IS NULL
;;
SELECT * FROM users WHERE deleted_at IS NOT NULL OR banned = true
;;
SELECT id FROM tasks WHERE (status = 'open' OR status = 'blocked') AND priority >= 3 AND due_date <= CURRENT_DATE + 7
;;
SELECT id FROM tasks WHERE NOT (status = ANY ('{done,archived}'::text[]))
;;
SELECT CASE WHEN amount > 100 THEN 'big' WHEN amount > 10 THEN 'medium' ELSE 'small' END AS size, count(*) FROM orders GROUP BY 1 ORDER BY 2 DESC
;;
SELECT date_trunc('day', created_at) AS day, count(*) FROM orders WHERE created_at >= '2024-01-01' AND created_at < '2024-02-01' GROUP BY 1 HAVING count(*) > 1 ORDER BY 1
;;
SELECT o.id, json_build_object('id', c.id, 'name', c.name) AS customer FROM orders o JOIN customers c USING (customer_id) WHERE o.id = ANY($1::int[])
;;
SELECT a.id FROM a LEFT JOIN b ON b.a_id = a.id AND b.kind = 'x' WHERE b.id IS NULL
;;
SELECT id FROM docs WHERE title ~* '^(draft|final)$' AND path LIKE '/home/%/docs/%'
;;
SELECT 'union' AS kind, id FROM a UNION ALL SELECT 'other', id FROM b WHERE b.flag
;;
SELECT id, NULL::text AS note FROM a WHERE a.x = 1 UNION ALL SELECT id, note FROM b WHERE b.y = 2
;;
SELECT * FROM generate_series(1, 10) AS g(i)
;;
SELECT pg_size_pretty(pg_database_size(current_database()))
;;
EXPLAIN (ANALYZE, BUFFERS) SELECT * FROM orders WHERE id = 5
;;
CREATE INDEX CONCURRENTLY IF NOT EXISTS index_orders_on_customer_id ON orders USING btree (customer_id)
;;
ALTER TABLE orders ADD COLUMN note text DEFAULT '' NOT NULL
;;
CREATE TABLE "django_migrations" ("id" bigint NOT NULL PRIMARY KEY GENERATED BY DEFAULT AS IDENTITY, "app" varchar(255) NOT NULL, "name" varchar(255) NOT NULL, "applied" timestamp with time zone NOT NULL)
;;
INSERT INTO "django_session" ("session_key", "session_data", "expire_date") VALUES ('x9k2m', '.eJxVjDsOwjAQBe_iGln-xL-U9JwhcryODSgoSGy6iLtjKwhKmVa3dqV3MDw3xqv6M8Mh5Q1fOI_lFL4pGglQPHUA:1rs3j0:abc', '2024-06-01T00:00:00+00:00'::timestamptz)
;;
UPDATE "accounts" SET "balance" = "balance" - 100 WHERE "accounts"."id" = 1 AND "accounts"."balance" >= 100
;;
SELECT * FROM "items" WHERE "items"."price" BETWEEN 10 AND 20 AND "items"."name" NOT LIKE '%test%'
;;
SELECT 1 AS one FROM "users" WHERE "users"."email" = 'bob@example.com' AND "users"."id" != 4 LIMIT 1
