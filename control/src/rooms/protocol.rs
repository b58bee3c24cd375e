//! The room protocol's wire format (docs/rooms.md): requests, responses and
//! notifications as JSON text, and [`RoomError`], a refused request with its code.

use serde_json::{json, Value};
use sluice_dataplane::str0m::media::MediaKind;

use crate::negotiate::NegotiateError;

/// Why a participant's request (or message) was refused; [`RoomError::code`]
/// is the HTTP-like `errorCode`, `Display` the one-line `errorReason`.
#[derive(Debug, thiserror::Error)]
pub enum RoomError {
    // The message is not a request we can read.
    /// 400: binary frames.
    #[error("binary messages are not supported; send JSON text")]
    Binary,
    /// 413: a message over `ws_max_message` bytes.
    #[error("message over {0} bytes (ws_max_message)")]
    TooLarge(usize),
    /// 400: not JSON.
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// 400: JSON, but not a request.
    #[error("expected {{\"request\":true,\"id\":N,\"method\":...,\"data\":{{...}}}}")]
    NotARequest,
    /// 404: a method the server does not have.
    #[error("unknown method {0:?}")]
    UnknownMethod(String),

    // The request's data is wrong.
    /// 400: a required field is absent (its description, e.g. `data.producerId`).
    #[error("{0} is required")]
    Missing(&'static str),
    /// 400: `data.kind` of produce.
    #[error("data.kind must be \"audio\" or \"video\"")]
    BadKind,
    /// 400: produce names a mid the send transport did not offer.
    #[error("mid {0:?} is not in the send transport")]
    MidNotOffered(String),
    /// 400: produce names a mid of the other kind.
    #[error("mid {0:?} is not {1}")]
    MidOfOtherKind(String, &'static str),
    /// 400: `data.spatialLayer` out of range.
    #[error("data.spatialLayer must be null or an integer from 0 (lowest) to 255")]
    BadSpatialLayer,
    /// 400: `data.temporalLayer` out of range.
    #[error("data.temporalLayer must be null or an integer from 0 (base layer) to 255")]
    BadTemporalLayer,
    /// 400: a layer cap for an audio consumer.
    #[error("consumer {0:?} is audio; layers apply to video consumers")]
    AudioConsumer(String),
    /// 400: chat text over the limit.
    #[error("chat messages are at most 1000 characters")]
    ChatTooLong,
    /// 400 or 422: the send transport's offer cannot be answered.
    #[error("{}", .0.reason())]
    Negotiate(NegotiateError),

    // Over a limit.
    /// 503: the room has `max_room_peers` participants.
    #[error("room is full (max_room_peers)")]
    RoomFull,
    /// 503: the server has `max_rooms` rooms.
    #[error("too many rooms (max_rooms)")]
    TooManyRooms,

    // The request does not fit the participant's state.
    /// 409: a request other than join before join.
    #[error("{} before join: send join first", .0.escape_debug())]
    NotJoined(String),
    /// 409: a second join.
    #[error("already joined")]
    AlreadyJoined,
    /// 409: the peer id is taken in the room.
    #[error("peer id already in use in this room")]
    PeerIdInUse,
    /// 409: the participant is no longer in the room.
    #[error("not in the room")]
    NotInRoom,
    /// 409: the send transport's session exists, or `max_sessions` is reached.
    #[error("send transport exists or server at capacity")]
    SendTransportRefused,
    /// 409: a send transport recorded already.
    #[error("send transport already created")]
    SendTransportExists,
    /// 409: produce before createSendTransport.
    #[error("createSendTransport first")]
    NoSendTransport,
    /// 409: a second producer on one mid.
    #[error("mid {0:?} already has a producer")]
    MidTaken(String),
    /// 404: no such producer of this participant.
    #[error("no producer {0:?}")]
    NoProducer(String),
    /// 404: no such consumer of this participant.
    #[error("no consumer {0:?}")]
    NoConsumer(String),

    // Credentials and capacity.
    /// 403: the room token does not grant publishing.
    #[error("token does not grant the publish right")]
    PublishNotGranted,
    /// 503: no shard to place the send transport on.
    #[error("no shard")]
    NoShard,
}

impl RoomError {
    /// The `errorCode` of the response.
    pub fn code(&self) -> u16 {
        use RoomError::*;
        match self {
            Binary | MalformedJson(_) | NotARequest | Missing(_) | BadKind | MidNotOffered(_)
            | MidOfOtherKind(..) | BadSpatialLayer | BadTemporalLayer | AudioConsumer(_)
            | ChatTooLong => 400,
            Negotiate(NegotiateError::Malformed(_)) => 400,
            Negotiate(NegotiateError::Unsupported(_)) => 422,
            TooLarge(_) => 413,
            UnknownMethod(_) | NoProducer(_) | NoConsumer(_) => 404,
            NotJoined(_) | AlreadyJoined | PeerIdInUse | NotInRoom | SendTransportRefused
            | SendTransportExists | NoSendTransport | MidTaken(_) => 409,
            PublishNotGranted => 403,
            NoShard | RoomFull | TooManyRooms => 503,
        }
    }
}

/// A notification: `{"notification":true,"method":…,"data":…}`.
pub fn notification(method: &str, data: Value) -> String {
    json!({"notification": true, "method": method, "data": data}).to_string()
}

/// A request from the server: `{"request":true,"id":…,"method":…,"data":…}`.
pub fn request(id: u64, method: &str, data: Value) -> String {
    json!({"request": true, "id": id, "method": method, "data": data}).to_string()
}

/// A successful response to request `id`.
pub fn ok(id: u64, data: Value) -> String {
    json!({"response": true, "id": id, "ok": true, "data": data}).to_string()
}

/// A refusal of request `id` (0 when the message had no readable id).
pub fn err(id: u64, e: &RoomError) -> String {
    json!({"response": true, "id": id, "ok": false, "errorCode": e.code(), "errorReason": e.to_string()})
        .to_string()
}

/// A message from a participant, as far as the server reads it.
pub enum Incoming {
    /// A request to the server.
    Request {
        /// Its id, echoed in the response.
        id: u64,
        /// Its method.
        method: String,
        /// Its data (`{}` when absent).
        data: Value,
    },
    /// A response to a request the server sent.
    Response {
        /// The id of the server's request.
        id: u64,
        /// The data, or the participant's reason for refusing.
        result: Result<Value, String>,
    },
}

impl Incoming {
    /// Read one text message; a refusal carries the id to answer (0 if none).
    pub fn parse(text: &str) -> Result<Option<Incoming>, (u64, RoomError)> {
        let v: Value =
            serde_json::from_str(text).map_err(|e| (0, RoomError::MalformedJson(e.to_string())))?;
        if v.get("response").and_then(Value::as_bool) == Some(true) {
            // A response without an id answers nothing; it is dropped.
            let Some(id) = v.get("id").and_then(Value::as_u64) else {
                return Ok(None);
            };
            let result = if v.get("ok").and_then(Value::as_bool) == Some(true) {
                Ok(v.get("data").cloned().unwrap_or(json!({})))
            } else {
                Err(v
                    .get("errorReason")
                    .and_then(Value::as_str)
                    .unwrap_or("client refused")
                    .to_string())
            };
            return Ok(Some(Incoming::Response { id, result }));
        }
        let (Some(true), Some(id), Some(method)) = (
            v.get("request").and_then(Value::as_bool),
            v.get("id").and_then(Value::as_u64),
            v.get("method").and_then(Value::as_str),
        ) else {
            let id = v.get("id").and_then(Value::as_u64).unwrap_or(0);
            return Err((id, RoomError::NotARequest));
        };
        Ok(Some(Incoming::Request {
            id,
            method: method.to_string(),
            data: v.get("data").cloned().unwrap_or(json!({})),
        }))
    }
}

/// `"audio"` or `"video"`.
pub fn kind_str(k: MediaKind) -> &'static str {
    if k == MediaKind::Audio {
        "audio"
    } else {
        "video"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_carries_code_and_one_line_reason() {
        let v: Value = serde_json::from_str(&err(7, &RoomError::NoProducer("p".into()))).unwrap();
        assert_eq!(v["id"], 7);
        assert_eq!(v["ok"], false);
        assert_eq!(v["errorCode"], 404);
        assert_eq!(v["errorReason"], "no producer \"p\"");
    }

    #[test]
    fn message_that_is_not_a_request_is_refused_with_its_id() {
        let Err((id, e)) = Incoming::parse(r#"{"id":5,"method":"join"}"#) else {
            panic!("accepted a message without request:true");
        };
        assert_eq!(id, 5);
        assert_eq!(e.code(), 400);
        assert!(matches!(
            Incoming::parse("{"),
            Err((0, RoomError::MalformedJson(_)))
        ));
    }

    #[test]
    fn a_method_name_with_a_line_break_stays_one_line_in_the_reason() {
        // Found by fuzzing (fuzz/ target room_messages): a request before join
        // whose method spans lines.
        let text = r#"{"request":true,"id":1,"method":"chat\r\na=sendonly"}"#;
        let Ok(Some(Incoming::Request { method, .. })) = Incoming::parse(text) else {
            panic!("request not read");
        };
        let reason = RoomError::NotJoined(method).to_string();
        assert!(!reason.contains('\n') && !reason.contains('\r'), "{reason}");
        assert_eq!(
            RoomError::NotJoined("chat".into()).to_string(),
            "chat before join: send join first"
        );
    }

    #[test]
    fn client_refusal_keeps_its_reason() {
        let Ok(Some(Incoming::Response { id, result })) =
            Incoming::parse(r#"{"response":true,"id":3,"ok":false,"errorReason":"no"}"#)
        else {
            panic!("response not read");
        };
        assert_eq!(id, 3);
        assert_eq!(result, Err("no".to_string()));
    }
}
