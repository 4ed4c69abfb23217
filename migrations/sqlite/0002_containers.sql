-- Code interpreter containers (`cntr_...`) and their files, owned like every stored object. A
-- container row holds everything a gateway replica needs to reach its sandbox without having
-- created it: the pool manager's claim, the agent's endpoint and SPIFFE ID, the agent session.

CREATE TABLE containers (
    id               TEXT PRIMARY KEY,
    tenant           TEXT NOT NULL,
    owner            TEXT NOT NULL,
    name             TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    -- 'running' or 'expired' (a deleted container has no row).
    status           TEXT NOT NULL,
    -- Unix milliseconds; the container expires `idle_ms` after it.
    last_active_at   BIGINT NOT NULL,
    idle_ms          BIGINT NOT NULL,
    memory_limit     TEXT,
    claim_id         TEXT NOT NULL,
    pool             TEXT NOT NULL,
    agent_endpoint   TEXT NOT NULL,
    agent_spiffe_id  TEXT NOT NULL,
    -- Unix seconds at which the pool manager frees the claim unless it is renewed.
    claim_expires_at BIGINT NOT NULL,
    session_id       TEXT NOT NULL
);
CREATE INDEX containers_owner_idx ON containers (tenant, owner, id);
CREATE INDEX containers_running_idx ON containers (last_active_at) WHERE status = 'running';

-- Files in a container's workspace: uploaded (source 'user') or written by code ('assistant').
-- A file's id is derived from (container, path), so every replica names a path the same way.
CREATE TABLE container_files (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL UNIQUE,
    container_id TEXT NOT NULL REFERENCES containers (id) ON DELETE CASCADE,
    tenant       TEXT NOT NULL,
    owner        TEXT NOT NULL,
    path         TEXT NOT NULL,
    bytes        BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    source       TEXT NOT NULL
);
CREATE INDEX container_files_container_idx ON container_files (container_id, seq);
