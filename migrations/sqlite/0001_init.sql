-- antwort gateway storage, SQLite (the embedded engine). Same schema as migrations/postgres; every row
-- carries (tenant, owner) and every query filters on them. JSON is TEXT; ids are time-ordered and
-- compare bytewise (SQLite's default BINARY collation), so listing pages on them.

CREATE TABLE responses (
    id                   TEXT PRIMARY KEY,
    tenant               TEXT NOT NULL,
    owner                TEXT NOT NULL,
    created_at           BIGINT NOT NULL,
    status               TEXT NOT NULL,
    previous_response_id TEXT,
    conversation_id      TEXT,
    response             TEXT NOT NULL,
    -- The create request of a background response, for the worker that runs it.
    request              TEXT,
    worker               TEXT,
    lease_expires_at     BIGINT,
    attempts             BIGINT NOT NULL DEFAULT 0,
    cancel_requested     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX responses_owner_idx ON responses (tenant, owner, id);
CREATE INDEX responses_queued_idx ON responses (id) WHERE status = 'queued';
CREATE INDEX responses_leased_idx ON responses (lease_expires_at) WHERE status = 'in_progress' AND worker IS NOT NULL;

-- Input items (kind 'input') then output items (kind 'output') of a response, in `position` order.
CREATE TABLE response_items (
    response_id TEXT NOT NULL REFERENCES responses (id) ON DELETE CASCADE,
    position    BIGINT NOT NULL,
    kind        TEXT NOT NULL,
    id          TEXT NOT NULL,
    tenant      TEXT NOT NULL,
    owner       TEXT NOT NULL,
    data        TEXT NOT NULL,
    PRIMARY KEY (response_id, position)
);
CREATE INDEX response_items_id_idx ON response_items (tenant, id);

CREATE TABLE response_events (
    response_id     TEXT NOT NULL REFERENCES responses (id) ON DELETE CASCADE,
    sequence_number BIGINT NOT NULL,
    tenant          TEXT NOT NULL,
    owner           TEXT NOT NULL,
    data            TEXT NOT NULL,
    PRIMARY KEY (response_id, sequence_number)
);

CREATE TABLE conversations (
    id         TEXT PRIMARY KEY,
    tenant     TEXT NOT NULL,
    owner      TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    metadata   TEXT NOT NULL
);
CREATE INDEX conversations_owner_idx ON conversations (tenant, owner, id);

CREATE TABLE conversation_items (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    id              TEXT NOT NULL,
    tenant          TEXT NOT NULL,
    owner           TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    data            TEXT NOT NULL,
    UNIQUE (conversation_id, id)
);
CREATE INDEX conversation_items_id_idx ON conversation_items (tenant, id);
