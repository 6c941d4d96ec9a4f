//! The on-disk form of an event and its JSON export form.
//!
//! Stored value: `[version: u8][hash: 32 bytes][payload]`, where payload is
//! `bincode::serialize(&Envelope)` (bincode 1.3 default options: fixed-width little-endian
//! integers) and `hash = blake3(payload)`. The payload contains the previous event's hash, so
//! the hashes form a chain: changing or removing any stored event breaks every later link.

use super::{hex, unhex, Body, Envelope, Event, Hash};
use serde::{Deserialize, Serialize};

/// The format version written today.
pub const CURRENT_VERSION: u8 = 1;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("event record is too short ({0} bytes)")]
    Short(usize),
    #[error(
        "event format version {0} is newer than this torc-ledger understands; upgrade torc-ledger"
    )]
    UnknownVersion(u8),
    #[error("event payload does not decode: {0}")]
    Decode(String),
    #[error("stored hash does not match the event's content")]
    HashMismatch,
}

pub fn hash_payload(payload: &[u8]) -> Hash {
    *blake3::hash(payload).as_bytes()
}

/// Encode an envelope; returns the stored bytes and the event's hash.
pub fn encode(env: &Envelope) -> (Vec<u8>, Hash) {
    let payload = bincode::serialize(env).expect("envelopes always serialize");
    let hash = hash_payload(&payload);
    let mut out = Vec::with_capacity(33 + payload.len());
    out.push(CURRENT_VERSION);
    out.extend_from_slice(&hash);
    out.extend_from_slice(&payload);
    (out, hash)
}

/// Decode stored bytes. With `verify`, the hash is recomputed and compared.
pub fn decode(bytes: &[u8], verify: bool) -> Result<Event, CodecError> {
    if bytes.len() < 33 {
        return Err(CodecError::Short(bytes.len()));
    }
    let version = bytes[0];
    let mut hash = [0u8; 32];
    hash.copy_from_slice(&bytes[1..33]);
    let payload = &bytes[33..];
    let env = match version {
        1 => bincode::deserialize::<Envelope>(payload)
            .map_err(|e| CodecError::Decode(e.to_string()))?,
        v => return Err(CodecError::UnknownVersion(v)),
    };
    if verify && hash_payload(payload) != hash {
        return Err(CodecError::HashMismatch);
    }
    Ok(Event { env, hash })
}

/// One line of `torc-ledger export`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportLine {
    pub seq: u64,
    pub time_ms: u64,
    pub actor: super::Actor,
    pub cause: Option<u64>,
    pub index: u32,
    pub idempotency_key: Option<String>,
    pub kind: String,
    pub body: Body,
    pub prev_hash: String,
    pub hash: String,
}

impl ExportLine {
    pub fn from_event(ev: &Event) -> ExportLine {
        ExportLine {
            seq: ev.seq,
            time_ms: ev.time_ms,
            actor: ev.actor.clone(),
            cause: ev.cause,
            index: ev.index,
            idempotency_key: ev.idempotency_key.clone(),
            kind: ev.body.kind().to_string(),
            body: ev.body.clone(),
            prev_hash: hex(&ev.prev_hash),
            hash: hex(&ev.hash),
        }
    }

    /// Rebuild the stored event; `None` when a hash field is not 64 hex digits.
    pub fn to_envelope(&self) -> Option<(Envelope, Hash)> {
        let env = Envelope {
            seq: self.seq,
            time_ms: self.time_ms,
            actor: self.actor.clone(),
            cause: self.cause,
            index: self.index,
            idempotency_key: self.idempotency_key.clone(),
            prev_hash: unhex(&self.prev_hash)?,
            body: self.body.clone(),
        };
        Some((env, unhex(&self.hash)?))
    }
}
