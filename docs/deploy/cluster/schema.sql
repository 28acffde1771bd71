-- The schema of every shard (run on each primary at its first start; the
-- replicas copy it). The shard map sends each users row, and its orders,
-- to one shard by users.id.
CREATE TABLE users (
	id         bigint PRIMARY KEY,
	name       text NOT NULL,
	email      text NOT NULL,
	created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE orders (
	id      bigint NOT NULL,
	user_id bigint NOT NULL,
	amount  numeric(10,2) NOT NULL,
	PRIMARY KEY (user_id, id)
);
