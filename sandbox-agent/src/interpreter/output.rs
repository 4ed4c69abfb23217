//! Splitting the interpreter's stdout/stderr byte streams: the driver ends each execution's
//! output with a marker `\x1e<nonce>:<seq>\x1e`, which [`MarkerScanner`] finds even when a read
//! splits it; [`Utf8Chunker`] turns bytes into text without splitting a character.

/// Finds end-of-execution markers in a byte stream.
#[derive(Debug)]
pub struct MarkerScanner {
    /// `\x1e<nonce>:`
    prefix: Vec<u8>,
    /// Bytes held back because they may start a marker.
    pending: Vec<u8>,
}

/// What a chunk of the stream contained, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece {
    Data(Vec<u8>),
    Marker(u64),
}

/// Longest sequence number text accepted in a marker.
const MAX_SEQ_DIGITS: usize = 20;

impl MarkerScanner {
    pub fn new(nonce: &str) -> Self {
        let mut prefix = vec![0x1e];
        prefix.extend_from_slice(nonce.as_bytes());
        prefix.push(b':');
        Self { prefix, pending: Vec::new() }
    }

    /// Feeds `input`, returning data and markers in stream order. Data that could be the start of
    /// a marker is held back until the next call decides.
    pub fn push(&mut self, input: &[u8]) -> Vec<Piece> {
        let mut buf = std::mem::take(&mut self.pending);
        buf.extend_from_slice(input);
        let mut pieces = Vec::new();
        let mut start = 0;
        loop {
            let rest = &buf[start..];
            match find(rest, &self.prefix) {
                Some(at) => {
                    let after = &rest[at + self.prefix.len()..];
                    let digits = after.iter().take_while(|b| b.is_ascii_digit()).count();
                    if digits == after.len() && digits <= MAX_SEQ_DIGITS {
                        // Incomplete marker: keep it for the next read.
                        push_data(&mut pieces, &rest[..at]);
                        self.pending = rest[at..].to_vec();
                        return pieces;
                    }
                    let seq =
                        std::str::from_utf8(&after[..digits]).ok().and_then(|s| s.parse().ok());
                    match (seq, after.get(digits)) {
                        (Some(seq), Some(0x1e)) if digits > 0 => {
                            push_data(&mut pieces, &rest[..at]);
                            pieces.push(Piece::Marker(seq));
                            start += at + self.prefix.len() + digits + 1;
                        }
                        _ => {
                            // Looked like a marker but is not one: plain data.
                            push_data(&mut pieces, &rest[..at + 1]);
                            start += at + 1;
                        }
                    }
                }
                None => {
                    let keep = partial_prefix_len(rest, &self.prefix);
                    push_data(&mut pieces, &rest[..rest.len() - keep]);
                    self.pending = rest[rest.len() - keep..].to_vec();
                    return pieces;
                }
            }
        }
    }

    /// The held-back bytes, at end of stream.
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.pending)
    }
}

fn push_data(pieces: &mut Vec<Piece>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    if let Some(Piece::Data(last)) = pieces.last_mut() {
        last.extend_from_slice(data);
    } else {
        pieces.push(Piece::Data(data.to_vec()));
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(offset) = haystack[from..].iter().position(|&b| b == needle[0]) {
        let at = from + offset;
        if haystack[at..].starts_with(needle) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// Length of the longest suffix of `data` that is a proper prefix of `prefix`.
fn partial_prefix_len(data: &[u8], prefix: &[u8]) -> usize {
    (1..prefix.len().min(data.len() + 1)).rev().find(|&n| data.ends_with(&prefix[..n])).unwrap_or(0)
}

/// Decodes a byte stream as UTF-8 chunk by chunk, never splitting a character (invalid bytes
/// become U+FFFD).
#[derive(Debug, Default)]
pub struct Utf8Chunker {
    pending: Vec<u8>,
}

impl Utf8Chunker {
    pub fn push(&mut self, input: &[u8]) -> String {
        self.pending.extend_from_slice(input);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(text) => {
                    out.push_str(text);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(
                        std::str::from_utf8(&self.pending[..valid]).expect("checked valid prefix"),
                    );
                    match e.error_len() {
                        Some(bad) => {
                            out.push('\u{FFFD}');
                            self.pending.drain(..valid + bad);
                        }
                        None => {
                            // An incomplete character at the end: wait for the rest.
                            self.pending.drain(..valid);
                            return out;
                        }
                    }
                }
            }
        }
    }

    /// What is left at end of stream.
    pub fn finish(&mut self) -> String {
        let rest = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(scanner: &mut MarkerScanner, parts: &[&[u8]]) -> Vec<Piece> {
        let mut all = Vec::new();
        for part in parts {
            for piece in scanner.push(part) {
                match (all.last_mut(), piece) {
                    (Some(Piece::Data(last)), Piece::Data(more)) => last.extend(more),
                    (_, piece) => all.push(piece),
                }
            }
        }
        all
    }

    #[test]
    fn finds_markers_split_anywhere() {
        let stream: &[u8] = b"hello\n\x1eabc:12\x1eafter\x1eab\x1eabc:x\x1e";
        for split in 0..=stream.len() {
            let mut scanner = MarkerScanner::new("abc");
            let mut pieces = feed(&mut scanner, &[&stream[..split], &stream[split..]]);
            let rest = scanner.finish();
            match pieces.last_mut() {
                Some(Piece::Data(last)) => last.extend(rest),
                _ if !rest.is_empty() => pieces.push(Piece::Data(rest)),
                _ => {}
            }
            assert_eq!(
                pieces,
                vec![
                    Piece::Data(b"hello\n".to_vec()),
                    Piece::Marker(12),
                    Piece::Data(b"after\x1eab\x1eabc:x\x1e".to_vec()),
                ],
                "split at {split}"
            );
        }
    }

    #[test]
    fn plain_text_is_not_held_back() {
        let mut scanner = MarkerScanner::new("n");
        assert_eq!(scanner.push(b"line\n"), vec![Piece::Data(b"line\n".to_vec())]);
        assert_eq!(scanner.push(b"x\x1e"), vec![Piece::Data(b"x".to_vec())]);
        assert_eq!(scanner.push(b"y"), vec![Piece::Data(b"\x1ey".to_vec())]);
    }

    #[test]
    fn utf8_is_never_split() {
        let text = "añ€😀";
        let bytes = text.as_bytes();
        for split in 0..=bytes.len() {
            let mut chunker = Utf8Chunker::default();
            let mut out = chunker.push(&bytes[..split]);
            out += &chunker.push(&bytes[split..]);
            out += &chunker.finish();
            assert_eq!(out, text, "split at {split}");
        }
        let mut chunker = Utf8Chunker::default();
        assert_eq!(chunker.push(b"a\xffb"), "a\u{FFFD}b");
    }
}
