//! Who is calling: the [`Principal`] every authenticated request carries (as a request
//! extension), and what it may do. The authenticators that produce it live here too.

/// The authenticated caller. Every stored object is owned by `(tenant, user)`; handlers read
/// this from the request's extensions and pass it down to the engine and the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant: String,
    pub user: String,
    pub scopes: Scopes,
}

/// What a principal may do. `write` implies nothing about `read`; `admin` sees every object of
/// its tenant (never another tenant's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scopes {
    pub read: bool,
    pub write: bool,
    pub admin: bool,
}

impl Scopes {
    pub const ALL: Scopes = Scopes { read: true, write: true, admin: true };
    pub const READ_WRITE: Scopes = Scopes { read: true, write: true, admin: false };
}

impl Principal {
    /// The caller when authentication is configured off (local development only).
    pub fn anonymous() -> Self {
        Self { tenant: "default".into(), user: "anonymous".into(), scopes: Scopes::ALL }
    }
}
