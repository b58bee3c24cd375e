//! The room request dispatcher without a WebSocket, for the fuzz targets in
//! `fuzz/` (feature `fuzzing`). Not an API.

use std::sync::Arc;

use tokio::sync::mpsc::UnboundedReceiver;

use super::peer::PeerSession;
use crate::app::App;

/// One participant's side of the socket: messages in, queued messages out.
pub struct Participant(PeerSession);

impl Participant {
    /// Participant `peer` of `room` (not joined yet) and what gets queued for it.
    pub fn new(app: Arc<App>, room: &str, peer: &str) -> (Participant, UnboundedReceiver<String>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let session = PeerSession::new(app, room.into(), peer.into(), tx, None);
        (Participant(session), rx)
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
