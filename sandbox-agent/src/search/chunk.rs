//! Extracted text -> overlapping windows, as byte ranges into that text (so a hit can point back
//! at exactly where it came from). Ranges start and end on character boundaries, never start or
//! end in whitespace, and together cover every word of the text.

use std::ops::Range;

use super::config::{ChunkUnit, ChunkingConfig};

/// The chunks of `text`, in order. `config` must be valid (`size > overlap`).
pub(crate) fn chunk(text: &str, config: &ChunkingConfig) -> Vec<Range<usize>> {
    match config.unit {
        ChunkUnit::Chars => by_chars(text, config.size, config.overlap),
        ChunkUnit::Words => by_words(text, config.size, config.overlap),
    }
}

fn by_words(text: &str, size: usize, overlap: usize) -> Vec<Range<usize>> {
    let words = word_spans(text);
    let step = size.saturating_sub(overlap).max(1);
    let mut chunks = Vec::new();
    let mut first = 0;
    while first < words.len() {
        let last = (first + size).min(words.len()) - 1;
        chunks.push(words[first].start..words[last].end);
        if last + 1 == words.len() {
            break;
        }
        first += step;
    }
    chunks
}

fn word_spans(text: &str) -> Vec<Range<usize>> {
    let mut spans = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        match (c.is_whitespace(), start) {
            (true, Some(s)) => {
                spans.push(s..i);
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        spans.push(s..text.len());
    }
    spans
}

fn by_chars(text: &str, size: usize, overlap: usize) -> Vec<Range<usize>> {
    let mut chunks = Vec::new();
    let mut start = skip_whitespace(text, 0);
    while start < text.len() {
        let hard_end = advance_chars(text, start, size);
        let end = if hard_end == text.len() {
            hard_end
        } else {
            // End at the last whitespace in the window's second half, so words stay whole;
            // a window without one (a very long token) is cut where it is.
            match text[start..hard_end].rfind(char::is_whitespace) {
                Some(i) if i > (hard_end - start) / 2 => start + i,
                _ => hard_end,
            }
        };
        let trimmed_end = start + text[start..end].trim_end().len();
        if trimmed_end > start {
            chunks.push(start..trimmed_end);
        }
        if end == text.len() {
            break;
        }
        // Step back `overlap` characters, then forward to the start of a word.
        let mut next = retreat_chars(text, end, overlap);
        if next < end
            && next > 0
            && !text[..next].ends_with(char::is_whitespace)
            && let Some(i) = text[next..end].find(char::is_whitespace)
        {
            next += i;
        }
        next = skip_whitespace(text, next);
        start = if next > start { next } else { skip_whitespace(text, end) };
    }
    chunks
}

fn skip_whitespace(text: &str, at: usize) -> usize {
    at + (text[at..].len() - text[at..].trim_start().len())
}

/// The byte offset `count` characters after `at` (or the end).
fn advance_chars(text: &str, at: usize, count: usize) -> usize {
    text[at..].char_indices().nth(count).map_or(text.len(), |(i, _)| at + i)
}

/// The byte offset `count` characters before `at` (or 0).
fn retreat_chars(text: &str, at: usize, count: usize) -> usize {
    if count == 0 {
        return at;
    }
    text[..at].char_indices().rev().nth(count - 1).map_or(0, |(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(unit: ChunkUnit, size: usize, overlap: usize) -> ChunkingConfig {
        ChunkingConfig { unit, size, overlap }
    }

    fn texts<'a>(text: &'a str, ranges: &[Range<usize>]) -> Vec<&'a str> {
        ranges.iter().map(|r| &text[r.clone()]).collect()
    }

    /// Every word of `text` lies wholly inside some chunk.
    fn assert_covers(text: &str, ranges: &[Range<usize>]) {
        for word in word_spans(text) {
            assert!(
                ranges.iter().any(|r| r.start <= word.start && word.end <= r.end),
                "word {:?} at {word:?} is in no chunk of {ranges:?}",
                &text[word.clone()]
            );
        }
    }

    #[test]
    fn words_windows_overlap() {
        let text = "one two three four five six seven";
        let ranges = chunk(text, &cfg(ChunkUnit::Words, 3, 1));
        assert_eq!(texts(text, &ranges), ["one two three", "three four five", "five six seven"]);
        assert_eq!(chunk("", &cfg(ChunkUnit::Words, 3, 1)), Vec::<Range<usize>>::new());
        assert_eq!(texts("  solo ", &chunk("  solo ", &cfg(ChunkUnit::Words, 3, 0))), ["solo"]);
    }

    #[test]
    fn char_windows_keep_words_whole_and_overlap() {
        let text = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu";
        let ranges = chunk(text, &cfg(ChunkUnit::Chars, 20, 8));
        let pieces = texts(text, &ranges);
        assert_eq!(pieces[0], "alpha beta gamma");
        for piece in &pieces {
            assert!(piece.chars().count() <= 20, "{piece:?} too long");
            assert_eq!(piece.trim(), *piece);
        }
        // Consecutive chunks share text.
        for pair in ranges.windows(2) {
            assert!(pair[1].start < pair[0].end, "no overlap between {pair:?}");
            assert!(pair[1].start > pair[0].start, "no progress in {pair:?}");
        }
        assert_covers(text, &ranges);
        assert_eq!(ranges.last().expect("chunks").end, text.len());
    }

    #[test]
    fn char_windows_on_multibyte_text_and_long_tokens() {
        let text = "Grüße aus Köln — schöne Straße. ".repeat(20) + &"x".repeat(50);
        let ranges = chunk(&text, &cfg(ChunkUnit::Chars, 30, 10));
        for r in &ranges {
            // Slicing panics off a char boundary; this is the real check.
            assert!(text[r.clone()].chars().count() <= 30);
        }
        assert_covers(&text[..text.len() - 50], &ranges);
        assert_eq!(ranges.last().expect("chunks").end, text.len());
    }

    #[test]
    fn zero_overlap_tiles_the_text() {
        let text = "a b c d e f g h i j";
        let ranges = chunk(text, &cfg(ChunkUnit::Chars, 4, 0));
        assert_eq!(texts(text, &ranges), ["a b", "c d", "e f", "g h", "i j"]);
    }
}
