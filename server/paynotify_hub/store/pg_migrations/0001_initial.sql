-- paynotify store, PostgreSQL, version 1.
-- Applied by PostgresStore.open() in one transaction under an advisory lock; tables go into the
-- first schema of search_path. Times are epoch seconds injected by the hub (double precision).

CREATE TABLE notifications (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    identity           text NOT NULL UNIQUE,
    notify_type        text NOT NULL,
    payment_request_id text NOT NULL,
    payment_id         text NOT NULL,
    result_status      text NOT NULL,
    payload            bytea NOT NULL,
    send_count         integer NOT NULL,
    first_received_at  double precision NOT NULL,
    last_received_at   double precision NOT NULL
);

-- purge_settled scans by age.
CREATE INDEX notifications_last_received_idx ON notifications (last_received_at);

-- One row per HTTP request from Alipay.
CREATE TABLE receipts (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    notification_id bigint NOT NULL REFERENCES notifications (id) ON DELETE CASCADE,
    received_at     double precision NOT NULL,
    client_id       text NOT NULL,
    request_time    text NOT NULL,
    request_id      text NOT NULL
);

CREATE INDEX receipts_notification_idx ON receipts (notification_id);

-- One row per (group, notification). notify_type is copied here so that claim can filter
-- without a join.
CREATE TABLE deliveries (
    group_name       text NOT NULL,
    notification_id  bigint NOT NULL REFERENCES notifications (id) ON DELETE CASCADE,
    notify_type      text NOT NULL,
    state            text NOT NULL CHECK (state IN ('pending', 'leased', 'acked', 'dead')),
    attempts         integer NOT NULL DEFAULT 0,
    available_at     double precision NOT NULL,
    lease_token      text,
    lease_member     text,
    lease_expires_at double precision,
    acked_at         double precision,
    dead_at          double precision,
    dead_reason      text,
    PRIMARY KEY (group_name, notification_id)
);

-- group_states, purge_settled and the cascade from notifications look deliveries up by notification.
CREATE INDEX deliveries_notification_idx ON deliveries (notification_id);

-- claim and next_due: the pending work of one group, oldest first.
CREATE INDEX deliveries_pending_idx ON deliveries (group_name, notification_id)
    WHERE state = 'pending';

-- expire_leases scans by expiry, release by member.
CREATE INDEX deliveries_lease_expiry_idx ON deliveries (lease_expires_at)
    WHERE state = 'leased';
CREATE INDEX deliveries_lease_member_idx ON deliveries (group_name, lease_member)
    WHERE state = 'leased';
