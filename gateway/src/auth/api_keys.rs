//! Static API keys, kept as SHA-256 digests. A presented key is hashed and compared with every
//! stored digest in constant time, so neither the comparison nor which entry matched shows in
//! the response time.

use futures::future::BoxFuture;
use subtle::{ConditionallySelectable, ConstantTimeEq};

use super::config::{ApiKeyEntry, hash_key};
use super::{Authenticated, Authenticator, Principal};
use crate::error::Error;

pub struct ApiKeys {
    entries: Vec<ApiKeyEntry>,
}

impl ApiKeys {
    pub fn new(entries: Vec<ApiKeyEntry>) -> Self {
        Self { entries }
    }

    fn find(&self, credential: &str) -> Option<&ApiKeyEntry> {
        let digest = hash_key(credential);
        // Every entry is compared; the index of a match is selected without a branch.
        let mut found = subtle::Choice::from(0);
        let mut index = 0u64;
        for (i, entry) in self.entries.iter().enumerate() {
            let matches = entry.sha256.ct_eq(&digest);
            index.conditional_assign(&(i as u64), matches);
            found |= matches;
        }
        bool::from(found).then(|| &self.entries[index as usize])
    }
}

impl Authenticator for ApiKeys {
    fn authenticate<'a>(
        &'a self,
        credential: &'a str,
    ) -> BoxFuture<'a, Option<Result<Authenticated, Error>>> {
        // A key that matches nothing is not ours to refuse: a later authenticator may know it.
        let result = self.find(credential).map(|entry| {
            Ok(Authenticated {
                principal: Principal {
                    tenant: entry.tenant.clone(),
                    user: entry.user.clone(),
                    scopes: entry.scopes,
                },
                quota: entry.quota,
            })
        });
        Box::pin(std::future::ready(result))
    }
}
