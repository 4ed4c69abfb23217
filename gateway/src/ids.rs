//! Object ids: a type prefix (`resp`, `msg`, `fc`, `rs`, `call`) and a time-ordered UUIDv7, so
//! ids sort by creation time, which listing and debugging both like.

pub fn new_id(prefix: &str) -> String {
    let mut id = String::with_capacity(prefix.len() + 33);
    id.push_str(prefix);
    id.push('_');
    id.push_str(uuid::Uuid::now_v7().simple().encode_lower(&mut uuid::Uuid::encode_buffer()));
    id
}

/// Seconds since the Unix epoch, as the API's `created_at` fields carry them.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
