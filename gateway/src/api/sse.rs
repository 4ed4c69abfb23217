//! Server-sent events out: numbers each event (`sequence_number` from 0), writes it as one frame
//! (`event: <type>\ndata: <json>\n\n`, LF only) so it leaves in one write, and ends with
//! `data: [DONE]`. A stream silent for `keep_alive` (a tool running, a slow model) gets a
//! `: keep-alive` comment, which SSE clients ignore and proxies count as traffic.

use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use http::{HeaderValue, header};

use crate::openresponses::events::{Sequenced, StreamEvent};

pub fn response(
    events: impl Stream<Item = StreamEvent> + Send + 'static,
    keep_alive: Duration,
) -> Response {
    let frames = async_stream::stream! {
        let mut sequence_number = 0u64;
        futures::pin_mut!(events);
        loop {
            match tokio::time::timeout(keep_alive, events.next()).await {
                Ok(Some(event)) => {
                    yield Ok::<_, std::convert::Infallible>(frame(&event, sequence_number));
                    sequence_number += 1;
                }
                Ok(None) => break,
                Err(_) => yield Ok(Bytes::from_static(b": keep-alive\n\n")),
            }
        }
        yield Ok(Bytes::from_static(b"data: [DONE]\n\n"));
    };
    let mut response = Body::from_stream(frames).into_response();
    let headers = response.headers_mut();
    headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Reverse proxies (nginx) must not buffer a stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

fn frame(event: &StreamEvent, sequence_number: u64) -> Bytes {
    let name = event.name();
    let mut buf = BytesMut::with_capacity(256);
    buf.put_slice(b"event: ");
    buf.put_slice(name.as_bytes());
    buf.put_slice(b"\ndata: ");
    let mut writer = buf.writer();
    // JSON never contains a raw newline, so the payload is always one `data:` line.
    serde_json::to_writer(&mut writer, &Sequenced { event, sequence_number })
        .expect("stream events always serialize");
    let mut buf = writer.into_inner();
    buf.put_slice(b"\n\n");
    buf.freeze()
}
