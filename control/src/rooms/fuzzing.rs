//! The room request dispatcher without a WebSocket, for the fuzz targets in
//! `fuzz/` (feature `fuzzing`). Not an API.

use std::sync::Arc;

use super::peer::PeerSession;
use super::{outbox, OutboxRx};
use crate::app::App;

/// What the server queued for a participant, as its socket task would send it.
pub struct Outgoing(OutboxRx);

impl Outgoing {
    /// The next queued message, if one is waiting.
    pub fn try_recv(&mut self) -> Result<String, tokio::sync::mpsc::error::TryRecvError> {
        let m = self.0.rx.try_recv()?;
        self.0
            .bytes
            .fetch_sub(m.len(), std::sync::atomic::Ordering::Relaxed);
        Ok(m)
    }
}

/// One participant's side of the socket: messages in, queued messages out.
pub struct Participant(PeerSession);

impl Participant {
    /// Participant `peer` of `room` (not joined yet) and what gets queued for it.
    pub fn new(app: Arc<App>, room: &str, peer: &str) -> (Participant, Outgoing) {
        let (tx, rx, _full) = outbox(app.config.ws_queue);
        let session = PeerSession::new(app, room.into(), peer.into(), tx, None);
        (Participant(session), Outgoing(rx))
    }

    /// One text message, as the socket hands it; false to close the socket.
    pub async fn handle_text(&mut self, text: &str) -> bool {
        self.0.handle_text(text).await
    }

    /// The socket closed.
    pub fn leave(&mut self) {
        self.0.leave();
    }
}
