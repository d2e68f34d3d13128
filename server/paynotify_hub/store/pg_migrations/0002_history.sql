-- paynotify store, PostgreSQL, version 2: delivery history and the operator's lookups.

-- One row per lease, per end of a lease (acked, nacked, rejected, expired, released) and per
-- replay, written in the same statement as the change it records. `id` only orders the rows.
-- No foreign key (its check would lock the notification row on every claim and ack): purge
-- deletes these rows with their notification.
CREATE TABLE delivery_history (
    id               bigint GENERATED ALWAYS AS IDENTITY,
    notification_id  bigint NOT NULL,
    group_name       text NOT NULL,
    kind             text NOT NULL,
    at               double precision NOT NULL,
    attempt          integer NOT NULL,
    member           text NOT NULL,
    -- The delivery's state right after the event.
    state            text NOT NULL,
    lease_expires_at double precision,
    due_at           double precision,
    detail           text NOT NULL
);

CREATE INDEX delivery_history_notification_idx ON delivery_history (notification_id);

-- `paynotify show` finds a notification by either id Alipay gives.
CREATE INDEX notifications_payment_id_idx ON notifications (payment_id);
CREATE INDEX notifications_payment_request_id_idx ON notifications (payment_request_id);

-- Dead letters are few: status counts and the operator lists them without a scan.
CREATE INDEX deliveries_dead_idx ON deliveries (group_name, notification_id)
    WHERE state = 'dead';
