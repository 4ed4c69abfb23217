-- antwort gateway storage, PostgreSQL. Every row carries (tenant, owner) and every query filters
-- on them. JSON is kept as TEXT: the gateway reads and writes whole objects and never queries
-- inside them, so jsonb's parse-on-write would be pure cost. Ids sort bytewise (COLLATE "C"):
-- they are time-ordered, and listing pages on them.

CREATE TABLE responses (
    id                   TEXT COLLATE "C" PRIMARY KEY,
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
    cancel_requested     BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX responses_owner_idx ON responses (tenant, owner, id);
CREATE INDEX responses_queued_idx ON responses (id) WHERE status = 'queued';
CREATE INDEX responses_leased_idx ON responses (lease_expires_at) WHERE status = 'in_progress' AND worker IS NOT NULL;

-- Input items (kind 'input') then output items (kind 'output') of a response, in `position` order.
CREATE TABLE response_items (
    response_id TEXT COLLATE "C" NOT NULL REFERENCES responses (id) ON DELETE CASCADE,
    position    BIGINT NOT NULL,
    kind        TEXT NOT NULL,
    id          TEXT COLLATE "C" NOT NULL,
    tenant      TEXT NOT NULL,
    owner       TEXT NOT NULL,
    data        TEXT NOT NULL,
    PRIMARY KEY (response_id, position)
);
CREATE INDEX response_items_id_idx ON response_items (tenant, id);

CREATE TABLE response_events (
    response_id     TEXT COLLATE "C" NOT NULL REFERENCES responses (id) ON DELETE CASCADE,
    sequence_number BIGINT NOT NULL,
    tenant          TEXT NOT NULL,
    owner           TEXT NOT NULL,
    data            TEXT NOT NULL,
    PRIMARY KEY (response_id, sequence_number)
);

CREATE TABLE conversations (
    id         TEXT COLLATE "C" PRIMARY KEY,
    tenant     TEXT NOT NULL,
    owner      TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    metadata   TEXT NOT NULL
);
CREATE INDEX conversations_owner_idx ON conversations (tenant, owner, id);

CREATE TABLE conversation_items (
    seq             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    conversation_id TEXT COLLATE "C" NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    id              TEXT COLLATE "C" NOT NULL,
    tenant          TEXT NOT NULL,
    owner           TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    data            TEXT NOT NULL,
    UNIQUE (conversation_id, id)
);
CREATE INDEX conversation_items_id_idx ON conversation_items (tenant, id);
